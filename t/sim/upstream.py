"""The simulation's upstream: the API behind the gate, and its witness.

Every request it receives is recorded with the simulation's call id (the
`sim` query argument), the buyer the gate named (`X-Toll-Buyer`), the
service of the location that sent it (`X-Sim-Service`, set by each
location's proxy_set_header; "-" for a location that sells nothing), the
method and path, and the status it answered.  That record is what "the
upstream received" means in the checks: the meter must agree with it.

What a request asks for, in its query:

    st=503      answer that status
    ms=300      wait that long first
    hang=1      answer nothing; wait until nginx gives up (its
                proxy_read_timeout) and closes the connection; recorded as
                the 504 nginx answers the client then
    xa=1        answer 200 with X-Accel-Redirect: /xai/...?sim=<id>, which
                nginx follows to an internal, priced location
"""

import select
import threading
import time
import urllib.parse

from helpers.httpd import UpstreamHandler, UpstreamServer, serve_upstream

HANG_CAP_S = 20.0


class _Handler(UpstreamHandler):
    server_version = "toll-sim-upstream"

    def _answer(self):
        owner = self.server.owner
        t0 = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        rec = {
            "id": q.get("sim", ""),
            "buyer": self.headers.get("X-Toll-Buyer", ""),
            "service": self.headers.get("X-Sim-Service", ""),
            "method": self.command,
            "path": url.path,
            "status": None,
            "t": t0,
        }
        owner._begin(rec)
        try:
            self._behave(q, url, rec, t0)
        finally:
            owner._end(rec)

    def _behave(self, q, url, rec, t0):
        if "ms" in q:
            time.sleep(int(q["ms"]) / 1000.0)
        if q.get("hang"):
            rec["status"] = self._hang()
            if rec["status"] == 504:
                self.close_connection = True
                return
        status = int(q.get("st", "200"))
        out = b'{"ok":true}'
        extra = []
        if q.get("xa"):
            # the rest of the path below /xa/, under the internal location
            rest = url.path[len("/xa/"):] if url.path.startswith(
                "/xa/") else url.path.lstrip("/")
            extra.append(("X-Accel-Redirect",
                          "/xai/%s?sim=%s" % (rest, rec["id"])))
            out = b""
        rec["status"] = status
        rec["latency"] = time.monotonic() - t0
        try:
            self.send_response(status)
            for k, v in extra:
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(out)
        except OSError:
            # nginx left first (its client aborted): what was answered is
            # still what the upstream answered
            self.close_connection = True

    def _hang(self):
        """Waits for the peer (nginx) to close the connection: its read
        timeout.  504 when it did, 200 (answered) after HANG_CAP_S."""
        sock = self.connection
        deadline = time.monotonic() + HANG_CAP_S
        while time.monotonic() < deadline:
            r, _, _ = select.select([sock], [], [], 0.2)
            if r:
                try:
                    data = sock.recv(1, 2)      # MSG_PEEK
                except OSError:
                    return 504
                if not data:
                    return 504
                # nginx sent more (a pipelined request cannot come on an
                # upstream connection that is busy): keep waiting
                time.sleep(0.05)
        return 200

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer


class _Server(UpstreamServer):
    request_queue_size = 256

    def handle_error(self, request, client_address):
        # a connection nginx closed while a handler read or wrote it: not
        # the upstream's business to report
        pass


class SimUpstream:
    def __init__(self):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._records = []
        self._busy = 0
        self._server, self._thread = serve_upstream(_Server, _Handler, self,
                                                    "sim-upstream")
        self.port = self._server.server_address[1]

    def _begin(self, rec):
        with self._lock:
            self._records.append(rec)
            self._busy += 1

    def _end(self, rec):
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def records(self):
        with self._lock:
            return [dict(r) for r in self._records]

    @property
    def total(self):
        with self._lock:
            return len(self._records)

    def wait_idle(self, timeout):
        """True once no request is being answered."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    def close(self):
        self._server.shutdown()
        self._server.server_close()
