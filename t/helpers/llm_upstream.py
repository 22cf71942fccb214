"""A stand-in for a model API behind the gate: it reports the tokens a
call used in a JSON answer or in the last event of a text/event-stream,
and cuts its answer where the test says.

    GET /json?total=N            application/json, Content-Length
    GET /sse?total=N&split=K     text/event-stream, chunked, sent in two
                                 writes cut at byte K of the body
    GET /big?total=N&size=S      text/event-stream, chunked, about S bytes
                                 of events before the usage event
    GET /gzip?total=N            JSON that claims Content-Encoding: gzip
    GET /plain                   text/plain, 11 bytes

Between the two writes of /sse it pauses a few milliseconds, so that nginx
most likely reads (and its body filter sees) two pieces; the result does
not depend on it, since the unit test of the scanner cuts every input at
every byte for certain.
"""

import http.server
import json
import threading
import time
import urllib.parse


def sse_body(total, filler=0):
    """The events of a streamed completion: content deltas with a null
    usage, the usage event, then [DONE]."""
    events = []
    for word in ("He", "llo", " world"):
        events.append({"choices": [{"delta": {"content": word}}],
                       "usage": None})
    n = 0
    while n < filler:
        ev = {"choices": [{"delta": {"content": "x" * 200}}], "usage": None}
        events.append(ev)
        n += 220
    events.append({"choices": [], "usage": {"prompt_tokens": 3,
                                            "completion_tokens": 4,
                                            "total_tokens": total}})
    out = "".join("data: %s\n\n" % json.dumps(e, separators=(",", ":"))
                  for e in events)
    return (out + "data: [DONE]\n\n").encode()


def json_body(total):
    return json.dumps({"id": "cmpl-1", "object": "chat.completion",
                       "choices": [{"message": {"content": "hi"}}],
                       "usage": {"prompt_tokens": 5,
                                 "completion_tokens": total - 5,
                                 "total_tokens": total}}).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "toll-test-llm"
    sys_version = ""
    disable_nagle_algorithm = True

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _stream(self, body, cuts):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        start = 0
        for cut in list(cuts) + [len(body)]:
            if cut > start:
                self._chunk(body[start:cut])
                self.wfile.flush()
                time.sleep(0.003)
            start = max(start, cut)
        self.wfile.write(b"0\r\n\r\n")

    def _whole(self, body, ctype, extra=()):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        total = int(q.get("total", "0"))
        self.server.owner.count += 1
        if url.path.endswith("/json"):
            self._whole(json_body(total), "application/json")
        elif url.path.endswith("/sse"):
            body = sse_body(total)
            self._stream(body, [int(q["split"])] if "split" in q else [])
        elif url.path.endswith("/big"):
            body = sse_body(total, int(q.get("size", "65536")))
            self._stream(body, range(4096, len(body), 4096))
        elif url.path.endswith("/gzip"):
            self._whole(json_body(total), "application/json",
                        [("Content-Encoding", "gzip")])
        else:
            self._whole(b"hello world", "text/plain")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.do_GET()

    def log_message(self, fmt, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class LlmUpstream:
    def __init__(self):
        self.count = 0
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="llm-upstream", daemon=True)
        self._thread.start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()
