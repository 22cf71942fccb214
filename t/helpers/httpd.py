"""Small HTTP servers the tests run in their own process (webhook
receivers): a request handler that logs nothing, and a threading server
on a free loopback port, served from a daemon thread.

    QuietHandler    BaseHTTPRequestHandler without the access log on stderr
    serve           start one; returns (server, thread), its port is
                    server.server_address[1]
"""

import http.server
import threading


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
