#!/usr/bin/python3
"""toll demo upstream: a tiny API that shows who called it.

It trusts the X-Toll-* headers that the gateway sets after it has checked
the caller's key, and answers every GET or POST with one JSON object:

    {"service": "echo", "buyer": "...", "key_id": "...", "plan": "...",
     "method": "GET", "path": "/api/hello"}

A request that reaches it without X-Toll-Buyer (nginx's open locations,
or a direct call) gets "buyer": null, which makes a missing gate visible.

Usage: upstream.py [--host 127.0.0.1] [--port 0]

With --port 0 the kernel picks a free port.  Once it listens, the server
prints one line "READY <port>" to stdout, so that demo/run.py knows where
it is without guessing.  Stdlib only; one thread per connection.
"""

import argparse
import http.server
import json
import signal
import sys


SERVICE = "echo"


class Handler(http.server.BaseHTTPRequestHandler):
    # keep-alive, so that nginx's upstream keepalive pool is exercised too
    protocol_version = "HTTP/1.1"
    # headers and body leave in two writes: without TCP_NODELAY, Nagle and
    # delayed ACKs hold every answer on a reused connection for ~40 ms
    disable_nagle_algorithm = True
    server_version = "toll-demo-upstream"
    sys_version = ""

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

        doc = {
            "service": SERVICE,
            "buyer": self.headers.get("X-Toll-Buyer"),
            "key_id": self.headers.get("X-Toll-Key-Id"),
            "plan": self.headers.get("X-Toll-Plan"),
            "method": self.command,
            "path": self.path,
        }
        body = (json.dumps(doc) + "\n").encode()

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, fmt, *args):
        # nginx's access log already records every call; keep stderr for
        # real errors only
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0,
                    help="0 lets the kernel pick a free port (default)")
    args = ap.parse_args()

    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    print("READY %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
