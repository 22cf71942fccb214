"""The calls of the simulation, sent as a client would.

Each call returns one outcome per request it made upstream-wards:

    {"id", "kind", "instance", "buyer", "service", "method", "path",
     "status" (int, or None: no answer), "t0", "t1" (monotonic), "note"}

HTTP/1.1 calls go over raw sockets (helpers/client.py), plain ones on a
keep-alive connection per lane and instance, the others on a connection
of their own.  A call that gets no answer is never retried: it keeps its
id, and the check decides what it may have counted.  HTTP/2 calls are
one nghttp process multiplexing a few streams over one h2c connection.
"""

import re
import socket
import subprocess
import time
import urllib.parse

from helpers import client

NGHTTP = "/usr/bin/nghttp"
# nghttp -s: id  responseEnd requestStart  process code size request path
STAT_LINE = re.compile(r"^\s*\d+\s+\S+\s+\S+\s+\S+\s+(\d{3})\s+\S+\s+(/\S*)$")
TIMEOUT_S = 15.0


def _url_path(path, query, call_id):
    q = dict(query)
    q["sim"] = call_id
    return path + "?" + urllib.parse.urlencode(q)


def _headers(key):
    return [key.bearer(), ("X-Test-Tag", "sim")]


class Lane:
    """One client thread's connections."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.conns = {}

    def close(self):
        for c in self.conns.values():
            c.close()

    def run(self, call):
        inst = self.cluster.instances[call["instance"]]
        key = self.cluster.keys[call["buyer"]]
        kind = call["kind"]
        if kind == "h2":
            return self._h2(inst, key, call)
        out = {k: call.get(k) for k in ("id", "kind", "instance", "buyer",
                                        "service", "method", "path")}
        out["note"] = ""
        out["t0"] = time.monotonic()
        try:
            if kind == "abort":
                out["status"] = self._abort(inst, key, call)
            elif kind in ("body_slow", "body_abandoned"):
                out["status"] = self._body(inst, key, call)
            else:
                out["status"] = self._keepalive(inst, key, call)
        except (OSError, client.NoResponse, ValueError) as e:
            out["status"] = None
            out["note"] = "%s: %s" % (type(e).__name__, e)
        out["t1"] = time.monotonic()
        return [out]

    # -- HTTP/1.1

    def _keepalive(self, inst, key, call):
        conn = self.conns.get(inst.name)
        if conn is None:
            conn = self.conns[inst.name] = client.KeepAlive(
                inst.port, timeout=TIMEOUT_S)
        if conn.sock is None:
            conn.connect()
        data = client.build_request(
            call["method"], _url_path(call["path"], call["query"],
                                      call["id"]),
            _headers(key), call.get("body", b""), close=False)
        try:
            conn.sock.sendall(data)
            resp, conn.buf = client.read_response(conn.sock, call["method"],
                                                  conn.buf)
        except Exception:
            conn.close()
            raise
        if (resp.header("connection") or "").lower() == "close":
            conn.close()
        return resp.status

    def _connect(self, inst):
        s = socket.create_connection(("127.0.0.1", inst.port),
                                     timeout=TIMEOUT_S)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def _abort(self, inst, key, call):
        """Sends a call the upstream answers slowly, and leaves before the
        answer: nginx ends it with 499."""
        s = self._connect(inst)
        try:
            s.sendall(client.build_request(
                call["method"], _url_path(call["path"], call["query"],
                                          call["id"]),
                _headers(key)))
            time.sleep(call["abort_after_s"])
        finally:
            s.close()
        return None

    def _body(self, inst, key, call):
        """A body sent slowly (each part within client_body_timeout: the
        call goes through), or abandoned: part of it, then a stall until
        nginx gives up (408, no answer sent) or a close mid-body."""
        n = call["body_len"]
        head = client.build_request(
            call["method"], _url_path(call["path"], call["query"],
                                      call["id"]),
            _headers(key) + [("Content-Length", str(n))], b"",
            close=True)
        body = b"x" * n
        s = self._connect(inst)
        try:
            s.sendall(head)
            if call["kind"] == "body_slow":
                parts = call["chunks"]
                step = (n + parts - 1) // parts
                for i in range(0, n, step):
                    time.sleep(call["gap_s"])
                    s.sendall(body[i:i + step])
                resp, _ = client.read_response(s, call["method"])
                return resp.status
            s.sendall(body[:call["sent"]])
            if call["leave_after_s"] is not None:
                time.sleep(call["leave_after_s"])
                return None
            # nginx closes without an answer when the body times out
            try:
                resp, _ = client.read_response(s, call["method"])
                return resp.status
            except client.NoResponse:
                return None
        finally:
            s.close()

    # -- HTTP/2

    def _h2(self, inst, key, call):
        """The streams of the call over one h2c connection (nghttp sends
        every URI on one connection, with prior knowledge); one outcome
        per stream, its status from nghttp's statistics."""
        argv = [NGHTTP, "-n", "-s", "-t", "%dms" % (TIMEOUT_S * 1000),
                "-H", "authorization: %s" % key.bearer()[1]]
        outs = {}
        for i, st in enumerate(call["streams"]):
            sid = "%sh%d" % (call["id"], i)
            path = _url_path(st["path"], st["query"], sid)
            argv.append("http://127.0.0.1:%d%s" % (inst.h2_port, path))
            outs[sid] = {"id": sid, "kind": "h2", "instance":
                         call["instance"], "buyer": call["buyer"],
                         "service": st["service"], "method": "GET",
                         "path": st["path"], "status": None, "note": ""}
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, capture_output=True, text=True,
                               timeout=TIMEOUT_S + 10)
            text, err = p.stdout, p.stderr.strip()
        except subprocess.TimeoutExpired as e:
            text, err = (e.stdout or b"").decode(), "nghttp timed out"
        t1 = time.monotonic()
        for line in text.splitlines():
            m = STAT_LINE.match(line)
            if not m:
                continue
            q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(
                m.group(2)).query))
            o = outs.get(q.get("sim"))
            if o is not None:
                o["status"] = int(m.group(1))
        for o in outs.values():
            o["t0"], o["t1"] = t0, t1
            if o["status"] is None:
                o["note"] = err[:200]
        return list(outs.values())
