"""Small HTTP servers the tests run in their own process (webhook
receivers, upstreams): a request handler that logs nothing, and a
threading server on a free loopback port, served from a daemon thread.

    QuietHandler    BaseHTTPRequestHandler without the access log on stderr
    serve           start one; returns (server, thread), its port is
                    server.server_address[1]
    UpstreamHandler, UpstreamServer
                    the bases of the upstreams behind nginx
    serve_upstream  start one for its owner (server.owner)
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


class UpstreamHandler(QuietHandler):
    """HTTP/1.1 with keep-alive, as nginx's upstream connections use it.
    Headers and body leave in separate writes: without TCP_NODELAY the
    body waits for nginx's delayed ACK, 40 ms per request."""
    protocol_version = "HTTP/1.1"
    sys_version = ""
    disable_nagle_algorithm = True


class UpstreamServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_upstream(server_class, handler, owner, name):
    """server_class on a free loopback port, with owner as its .owner,
    served from a daemon thread called name; returns (server, thread)."""
    server = server_class(("127.0.0.1", 0), handler)
    server.owner = owner
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": 0.05},
                              daemon=True, name=name)
    thread.start()
    return server, thread
