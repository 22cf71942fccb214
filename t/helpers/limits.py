"""Helpers for the rate-limit suites (t/test_limits*.py).

    fire            many requests at once: connections opened first, then
                    every request written, then every answer read
    rate headers    RateLimit / RateLimit-Policy parsing, X-RateLimit-*
    check_limited   toll's 429 (or toll_limit_status) problem answer
    SlowUpstream    an upstream that holds chosen requests until released
    Monitor         Redis MONITOR on a raw socket, to see which keys the
                    gate read
    make_key_rl     a key through tollctl, with --rate-limit
    LimitLog        an access log of $toll_limit_status per tagged request
"""

import json
import re
import select
import socket
import threading
import time

from helpers import client
from helpers.httpd import UpstreamHandler, UpstreamServer, serve_upstream
from helpers.keys import Key, redis_name, tollctl
from helpers.logs import log_records
from helpers.problem import REQUEST_ID_RE
from helpers.procs import wait_for


# ------------------------------------------------------------ requests

def connect(port, source=None, timeout=30.0):
    """A connection to 127.0.0.1:port, from `source` (e.g. "127.0.0.2",
    any 127/8 address works on Linux loopback) when given."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def request_from(port, source, path="/", headers=(), timeout=10.0):
    """One request (Connection: close) from a chosen source address."""
    t0 = time.monotonic()
    s = connect(port, source, timeout)
    try:
        s.sendall(client.build_request("GET", path, headers))
        r, _ = client.read_response(s)
    finally:
        s.close()
    r.elapsed = time.monotonic() - t0
    return r


class Volley:
    """n requests prepared on n open connections; go() writes them all
    back to back and reads every answer.  Opening the connections first
    keeps the requests themselves within a few milliseconds."""

    def __init__(self, port, reqs, source=None):
        # reqs: [(path, headers)]
        self.reqs = list(reqs)
        self.socks = [connect(port, source) for _ in self.reqs]
        self.sent_at = None     # wall clock when the first write began
        self.sent_done = None   # wall clock when the last write ended

    def go(self):
        datas = [client.build_request("GET", p, h) for p, h in self.reqs]
        self.sent_at = time.time()
        for s, d in zip(self.socks, datas):
            s.sendall(d)
        self.sent_done = time.time()
        out = []
        try:
            for s in self.socks:
                r, _ = client.read_response(s)
                out.append(r)
        finally:
            self.close()
        return out

    def close(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.socks = []


def fire(port, n, path, headers=(), source=None):
    """n identical requests at once; returns the list of Responses."""
    return Volley(port, [(path, list(headers))] * n, source).go()


def statuses(resps):
    return [r.status for r in resps]


def count(resps, status):
    return sum(1 for r in resps if r.status == status)


class Conn:
    """A keep-alive connection that reconnects when the server closed it
    after an answer (a refusal may close; that is not what is tested)."""

    def __init__(self, port):
        self.c = client.KeepAlive(port)

    def get(self, path, headers=()):
        if self.c.sock is None:
            self.c.connect()
        reused = self.c.used > 0
        try:
            return self.c.request(path=path, headers=list(headers))
        except (client.NoResponse, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            # an idle keep-alive connection closed under us: HTTP clients
            # retry on a new one (RFC 9112 section 9.3.1)
            self.c.connect()
            return self.c.request(path=path, headers=list(headers))

    def close(self):
        self.c.close()


# ------------------------------------------------------- rate headers

_ITEM_RE = re.compile(r'\s*"([^"\\]*)"((?:\s*;\s*[a-z][a-z0-9_.*-]*'
                      r'(?:=[^;,]*)?)*)\s*(?:,|$)')


def parse_sf_list(value):
    """A structured-field list of strings with parameters, as RateLimit
    and RateLimit-Policy carry: '"burst";q=10;w=10, "minute";q=60;w=60'.
    Returns {name: {param: int}}; fails on anything else, and on a name
    that appears twice."""
    assert value is not None, "header missing"
    out = {}
    pos = 0
    value = value.strip()
    while pos < len(value):
        m = _ITEM_RE.match(value, pos)
        assert m and m.end() > pos, "not a structured list: %r at %d" % (
            value, pos)
        name, params = m.group(1), m.group(2)
        d = {}
        for p in params.split(";"):
            p = p.strip()
            if not p:
                continue
            k, eq, v = p.partition("=")
            assert eq and re.fullmatch(r"-?\d+", v.strip()), \
                "parameter %r of %r is not an integer" % (p, value)
            assert k not in d, "parameter %s twice in %r" % (k, value)
            d[k] = int(v)
        assert name not in out, "%r twice in %r" % (name, value)
        out[name] = d
        pos = m.end()
    return out


RATE_HEADERS = ("ratelimit", "ratelimit-policy", "x-ratelimit-limit",
                "x-ratelimit-remaining", "x-ratelimit-reset",
                "x-ratelimit-burst-limit", "x-ratelimit-burst-remaining")
IETF = ("ratelimit", "ratelimit-policy")
XRL = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
       "x-ratelimit-burst-limit", "x-ratelimit-burst-remaining")


def rate_headers(resp):
    """{lower-case name: [values]} of the rate-limit headers present."""
    out = {}
    for k, v in resp.headers:
        if k.lower() in RATE_HEADERS:
            out.setdefault(k.lower(), []).append(v)
    return out


def one(resp, name):
    """The single value of header `name`; fails if absent or repeated."""
    vals = resp.header_all(name)
    assert len(vals) == 1, "%s: %r in %r" % (name, vals, resp.headers)
    return vals[0]


def one_int(resp, name):
    v = one(resp, name)
    assert re.fullmatch(r"\d+", v), "%s: %r is not an integer" % (name, v)
    return int(v)


def policy(resp):
    return parse_sf_list(one(resp, "RateLimit-Policy"))


def state(resp):
    return parse_sf_list(one(resp, "RateLimit"))


# ---------------------------------------------------------- refusals

LIMITED_FIELDS = {"type", "title", "status", "code", "detail", "policy",
                  "retry_after", "request_id"}
REASONS = {429: ("Too Many Requests",), 503: ("Service Unavailable",
                                              "Too Many Requests")}


def check_limited(resp, status=429, code="rate_limited", policy_name=None):
    """Asserts that resp is toll's refusal by a limit; returns the body.
    Retry-After (one, integer >= 1) equals the body's retry_after."""
    assert resp.status == status, (resp, resp.headers, resp.body[:300])
    assert resp.header("content-type") == "application/problem+json", \
        resp.headers
    doc = json.loads(resp.body)
    assert set(doc) == LIMITED_FIELDS, doc
    assert doc["type"] == "about:blank", doc
    assert doc["title"] in REASONS.get(status, (doc["title"],)), doc
    assert isinstance(doc["title"], str) and doc["title"], doc
    assert doc["status"] == status and isinstance(doc["status"], int), doc
    assert doc["code"] == code, doc
    assert isinstance(doc["detail"], str) and doc["detail"], doc
    assert REQUEST_ID_RE.match(doc["request_id"]), doc
    assert resp.header_all("x-request-id") == [doc["request_id"]], \
        resp.headers
    assert isinstance(doc["policy"], str) and doc["policy"], doc
    if policy_name is not None:
        assert doc["policy"] == policy_name, doc
    ra = resp.header_all("retry-after")
    assert len(ra) == 1 and re.fullmatch(r"\d+", ra[0]), resp.headers
    assert int(ra[0]) >= 1, resp.headers
    assert isinstance(doc["retry_after"], int), doc
    assert doc["retry_after"] == int(ra[0]), (doc, ra)
    return doc


# ------------------------------------------------------ slow upstream

class _SlowHandler(UpstreamHandler):
    server_version = "toll-test-slow"

    def do_GET(self):
        owner = self.server.owner
        held = "/hold" in self.path
        owner._arrive(self.path, held)
        try:
            if held:
                owner._gate_wait()
            out = b'{"ok":true}'
            self.send_response(200)
            for k, v in owner.extra_headers:
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            owner._leave(held)


class _SlowServer(UpstreamServer):
    request_queue_size = 128


class SlowUpstream:
    """An upstream that answers 200 at once, except requests whose path
    contains "/hold": those wait until release() (or 60 s).  hold() closes
    the gate again for later arrivals."""

    def __init__(self, extra_headers=()):
        self.extra_headers = list(extra_headers)
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self.arrivals = []          # paths, in order
        self.held_now = 0
        self._server, self._thread = serve_upstream(
            _SlowServer, _SlowHandler, self, "slow-upstream")
        self.port = self._server.server_address[1]

    def _arrive(self, path, held):
        with self._lock:
            self.arrivals.append(path)
            if held:
                self.held_now += 1

    def _leave(self, held):
        if held:
            with self._lock:
                self.held_now -= 1

    def _gate_wait(self):
        self._gate.wait(60)

    def count(self, pred=lambda p: True):
        with self._lock:
            return sum(1 for p in self.arrivals if pred(p))

    def held(self):
        with self._lock:
            return self.held_now

    def release(self):
        self._gate.set()

    def hold(self):
        self._gate.clear()

    def close(self):
        self._gate.set()
        self._server.shutdown()
        self._server.server_close()


# ----------------------------------------------------------- monitor

class Monitor:
    """Redis MONITOR on its own connection; text() is everything seen.
    sync() waits until every command sent before it has been seen."""

    def __init__(self, redis_server):
        self.redis = redis_server
        self.sock = socket.create_connection(("127.0.0.1",
                                              redis_server.port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self._buf = b""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        first = b""
        while b"\r\n" not in first:
            chunk = self.sock.recv(4096)
            assert chunk, "MONITOR connection closed"
            first += chunk
        line, _, rest = first.partition(b"\r\n")
        assert line == b"+OK", line
        self._buf = rest
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="redis-monitor")
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._buf += chunk

    def text(self):
        with self._lock:
            return self._buf.decode("latin-1")

    def sync(self, timeout=5):
        mark = "monitor-mark-%d" % time.time_ns()
        self.redis.client.echo(mark)
        wait_for(lambda: mark in self.text(), timeout,
                 what="MONITOR to catch up")

    def close(self):
        self._stop.set()
        self._thread.join(2)
        try:
            self.sock.close()
        except OSError:
            pass


# -------------------------------------------------------------- keys

def make_key_rl(redis, owner="acme", plan=None, rate_limit=None):
    """`tollctl key create` with --plan and --rate-limit, as an operator
    would; returns the Key with the record tollctl wrote."""
    args = ["key", "create", "--owner", owner, "--role", "buyer"]
    if plan is not None:
        args += ["--plan", plan]
    if rate_limit is not None:
        args += ["--rate-limit", str(rate_limit)]
    doc = json.loads(tollctl(redis, *args).stdout)
    fields = redis.client.hgetall(redis_name(doc["key_id"]))
    assert fields, "tollctl wrote no record"
    if rate_limit is not None:
        assert fields.get("rate_limit") == str(rate_limit), fields
    return Key(doc["key_id"], doc["secret"], fields)


# ------------------------------------------------------- access log

LIMIT_LOG_HTTP = ("    log_format limits 'tag=$http_x_test_tag"
                  "|ls=$toll_limit_status|status=$status|uri=$uri';\n"
                  "    access_log logs/limits.log limits;\n")


def limit_log(ngx):
    """[{tag, ls, status, uri}] from logs/limits.log (LIMIT_LOG_HTTP)."""
    return log_records(ngx.read(ngx.prefix + "/logs/limits.log"))


def wait_limit_log(ngx, tag, timeout=5):
    def find():
        return [r for r in limit_log(ngx) if r.get("tag") == tag]
    (line,) = wait_for(find, timeout, what="limits.log line tag=%s" % tag)
    return line


# ------------------------------------------------------------ config

def assert_config_refused(rc, out, text, alternatives):
    """nginx -t refused the config with one [emerg] (or [warn]) line that
    contains one of `alternatives` and is not nginx's "unknown directive"
    (which would only say the module lacks the directive)."""
    assert rc != 0, "nginx -t accepted:\n%s\n%s" % (text, out)
    errors = [l for l in out.splitlines() if "[emerg]" in l or "[warn]" in l]
    assert errors, out
    msg = errors[0]
    assert "unknown directive" not in msg, msg
    assert any(a in msg for a in alternatives), \
        "none of %r in %r" % (alternatives, msg)
    assert "test failed" in out, out
    return msg


# -------------------------------------------------------------- time

def sleep_until_wall(t):
    """Sleeps until time.time() >= t (pacing a schedule, not deciding a
    result)."""
    while True:
        d = t - time.time()
        if d <= 0:
            return
        time.sleep(min(d, 0.05) if d > 0.002 else d)


def send_only(port, path, headers):
    s = connect(port)
    s.sendall(client.build_request("GET", path, headers))
    return s

def read_one(s):
    try:
        r, _ = client.read_response(s)
        return r
    finally:
        s.close()

def hold(ngx, slow, path, headers, timeout=5):
    """Sends a request the slow upstream holds; returns its socket once it
    is held.  A place is given back when nginx frees a request, which can
    be a moment after its client read the answer: a concurrency refusal
    here is retried until the deadline."""
    end = time.monotonic() + timeout
    while True:
        s = send_only(ngx.port, path, headers)
        while time.monotonic() < end:
            if slow.count(lambda p: p == path):
                return s
            if select.select([s], [], [], 0.01)[0]:
                check_limited(read_one(s), code="concurrency_limited",
                              policy_name="concurrency")
                break
        else:
            s.close()
            raise TimeoutError("%s was never held" % path)
