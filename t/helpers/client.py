"""A small HTTP/1.1 client on a raw socket.

requests and http.client normalise what they send (one value per header
name, no control bytes), which hides exactly the cases a gate must get
right: duplicate headers, NUL and CR bytes, 8 KiB values.  This client
sends the bytes it is given and parses what comes back, nothing more.
"""

import json
import socket
import time
import uuid


class Response:
    """A parsed answer: status, headers as (name, value) pairs in wire
    order (duplicates kept), body bytes, and the wall time it took."""

    def __init__(self, status, reason, headers, body, elapsed, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.elapsed = elapsed
        self.raw_head = raw_head

    def header(self, name):
        """The first value of header `name` (any case), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %d %r %d bytes %.1f ms>" % (
            self.status, self.reason, len(self.body), self.elapsed * 1000)


class NoResponse(Exception):
    """The server closed the connection without sending a status line."""


def _to_bytes(x):
    if isinstance(x, bytes):
        return x
    return str(x).encode("latin-1")


def build_request(method="GET", path="/", headers=(), body=b"",
                  host="127.0.0.1", close=True):
    """Request bytes; header names and values may be str or bytes and are
    sent exactly as given (no folding, no validation)."""
    lines = [_to_bytes(method) + b" " + _to_bytes(path) + b" HTTP/1.1"]
    names = {(_to_bytes(k).lower()) for k, _ in headers}
    if b"host" not in names:
        lines.append(b"Host: " + _to_bytes(host))
    for k, v in headers:
        lines.append(_to_bytes(k) + b": " + _to_bytes(v))
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    if close and b"connection" not in names:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + _to_bytes(body)


def _read_head(sock, buf):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            if not buf:
                raise NoResponse("connection closed before any response")
            raise NoResponse("connection closed inside the response head: %r"
                             % buf[:200])
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def read_response(sock, method="GET", buf=b""):
    """Reads one response from `sock`.  Returns (Response, leftover bytes);
    elapsed is left at 0 for the caller to fill in."""
    head, rest = _read_head(sock, buf)
    lines = head.split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for line in lines[1:]:
        k, _, v = line.decode("latin-1").partition(":")
        headers.append((k, v.strip()))

    def hdr(name):
        for k, v in headers:
            if k.lower() == name:
                return v
        return None

    body = b""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        pass
    elif (hdr("transfer-encoding") or "").lower() == "chunked":
        data = rest
        body = b""
        while True:
            while b"\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise NoResponse("closed inside a chunked body")
                data += chunk
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(data) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    raise NoResponse("closed inside a chunk")
                data += chunk
            if size == 0:
                rest = data[2:]
                break
            body += data[:size]
            data = data[size + 2:]
    elif hdr("content-length") is not None:
        n = int(hdr("content-length"))
        data = rest
        while len(data) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise NoResponse("closed inside the body (%d of %d bytes)"
                                 % (len(data), n))
            data += chunk
        body, rest = data[:n], data[n:]
    else:
        data = rest
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        body, rest = data, b""

    return Response(status, reason, headers, body, 0.0, head), rest


def send_raw(port, data, method="GET", host="127.0.0.1", timeout=10.0):
    """Sends `data` on a new connection, returns the first Response."""
    t0 = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(data)
        resp, _ = read_response(s, method)
    resp.elapsed = time.monotonic() - t0
    return resp


def request(port, method="GET", path="/", headers=(), body=b"",
            timeout=10.0):
    """One request on a new connection (Connection: close)."""
    return send_raw(port, build_request(method, path, headers, body),
                    method=method, timeout=timeout)


class KeepAlive:
    """One persistent connection for many requests, as a real client
    holds it.  reconnect() is left to the caller so that a test decides
    what a closed connection means."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.port = port
        self.host = host
        self.timeout = timeout
        self.sock = None
        self.buf = b""
        self.used = 0

    def connect(self):
        self.close()
        self.sock = socket.create_connection((self.host, self.port),
                                            timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.used = 0

    def request(self, method="GET", path="/", headers=()):
        if self.sock is None:
            self.connect()
        t0 = time.monotonic()
        self.sock.sendall(build_request(method, path, headers, close=False))
        resp, self.buf = read_response(self.sock, method, self.buf)
        resp.elapsed = time.monotonic() - t0
        self.used += 1
        if (resp.header("connection") or "").lower() == "close":
            self.close()
        return resp

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""


def tag():
    """A fresh value for X-Test-Tag, to find a request in the logs."""
    return uuid.uuid4().hex


def tagged_request(port, headers=(), path="/", method="GET", body=b""):
    """One request with a fresh X-Test-Tag; returns (response, tag)."""
    t = tag()
    r = request(port, method=method, path=path,
                headers=list(headers) + [("X-Test-Tag", t)], body=body)
    return r, t
