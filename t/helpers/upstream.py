"""A counting HTTP/1.1 upstream: the API behind the gate, as tests see it.

Every request it receives is recorded (method, path, headers as
(name, value) pairs in arrival order with duplicates kept, body), and
answered 200 application/json {"ok":true}.  It runs in a thread of the
test process; nginx reaches it over loopback with keep-alive.
"""

import http.server
import threading
import time


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "toll-test-upstream"
    sys_version = ""
    # headers and body leave in separate writes: without TCP_NODELAY the
    # body waits for nginx's delayed ACK, 40 ms per request
    disable_nagle_algorithm = True

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.owner._record({
            "method": self.command,
            "path": self.path,
            "headers": [(k, v) for k, v in self.headers.items()],
            "body": body,
        })
        out = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer
    do_OPTIONS = _answer

    def log_message(self, fmt, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class Upstream:
    def __init__(self, host="127.0.0.1"):
        self._lock = threading.Lock()
        self._requests = []
        self._server = _Server((host, 0), _Handler)
        self._server.owner = self
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="upstream", daemon=True)
        self._thread.start()

    def _record(self, req):
        with self._lock:
            self._requests.append(req)

    @property
    def count(self):
        with self._lock:
            return len(self._requests)

    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    @property
    def last(self):
        with self._lock:
            return self._requests[-1] if self._requests else None

    def reset(self):
        with self._lock:
            self._requests.clear()

    def wait_count(self, n, timeout=5.0):
        """Waits until at least n requests arrived; returns the count."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.count
            if c >= n:
                return c
            time.sleep(0.01)
        return self.count

    def close(self):
        self._server.shutdown()
        self._server.server_close()


def header_values(req, name):
    """All values of header `name` (any case) in a recorded request."""
    return [v for k, v in req["headers"] if k.lower() == name.lower()]
