"""Helpers for the metering suites (t/test_meter.py, t/test_meter_load.py).

The contract is /tmp/meter_spec.md (issue 4).

    MeterUpstream   a counting upstream that answers any status asked for
                    (?status=503), waits when asked (?delay_ms=300), sends
                    copies of the billing headers when asked (?spoof=1), and
                    counts what it received per buyer and per service path
    meter_http      the http-level lines every metering test uses: a fast
                    flush and a per-call access log of the usage variables
    usage           the meter's Redis hashes, summed per (buyer, service)
    wait_usage      waits until Redis holds exactly what is expected
    free_claimed    the free tier's claimed count in Redis
    billing         the billing headers of an answer
    Load            keep-alive client threads, with a pause for faults
    run_wrk         wrk with a Lua script rotating keys, n requests
    run_h2load      h2load, parsed
"""

import decimal
import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest

from helpers import client
from helpers.httpd import UpstreamHandler, UpstreamServer, serve_upstream
from helpers.logs import log_records
from helpers.procs import wait_for


WRK = "/usr/bin/wrk"
H2LOAD = "/usr/bin/h2load"

MICROS = 1000000
USAGE_ID_RE = re.compile(r"^[0-9a-f]{32}$", re.I)
AMOUNT_RE = re.compile(r"^(0|[1-9][0-9]*)(\.[0-9]{1,6})?$")
HEADER_NAMES = ("Usage-Id", "Amount", "Free-Tier", "Free-Remaining",
                "Latency-Ms")

# the per-call usage log; relative paths are under the nginx prefix
METER_LOG_FORMAT = (
    "tag=$http_x_test_tag|status=$status|buyer=$toll_buyer"
    "|service=$toll_service|provider=$toll_provider|usage=$toll_usage_id"
    "|price=$toll_price|amount=$toll_amount|free=$toll_free_tier"
    "|ups=$upstream_status|uri=$uri")


def meter_http(flush="200ms", extra=""):
    """http-level text: toll_meter_flush and the usage log (logs/meter.log
    under the prefix, format METER_LOG_FORMAT)."""
    return ("    toll_meter_flush %s;\n"
            "    log_format meterlog '%s';\n"
            "    access_log logs/meter.log meterlog;\n%s"
            % (flush, METER_LOG_FORMAT, extra))


def micros(decimal_text):
    """"0.05" -> 50000, exactly (no float)."""
    d = decimal.Decimal(decimal_text)
    m = d * MICROS
    assert m == m.to_integral_value(), decimal_text
    return int(m)


# ------------------------------------------------------------ upstream

class _Handler(UpstreamHandler):
    server_version = "toll-meter-upstream"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        owner = self.server.owner
        owner._record(self.command, url.path,
                      self.headers.get("X-Toll-Buyer", ""),
                      self.headers.get("X-Test-Tag"))
        if "delay_ms" in q:
            time.sleep(int(q["delay_ms"]) / 1000.0)
        status = int(q.get("status", "200"))
        out = b'{"ok":true}'
        self.send_response(status)
        if q.get("spoof"):
            for prefix in ("X-Toll-", "X-ACF-", "x-toll-"):
                self.send_header(prefix + "Amount", "999.99")
                self.send_header(prefix + "Usage-Id", "f" * 32)
                self.send_header(prefix + "Free-Tier", "true")
                self.send_header(prefix + "Free-Remaining", "77")
                self.send_header(prefix + "Latency-Ms", "12345")
        # units reported as the units tests ask (t/test_units.py)
        for _ in range(int(q.get("units_times", "1"))):
            if "units" in q:
                self.send_header("X-Units", q["units"])
        if "size" in q:
            out = b'{"pad":"' + b"x" * (int(q["size"]) - 10) + b'"}'
        self.send_header("Content-Type", "application/json")
        if q.get("chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                for i in range(0, len(out), 4096):
                    part = out[i:i + 4096]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer


class _Server(UpstreamServer):
    request_queue_size = 512


def service_of(path):
    """The first path segment: "/svc-a/x" -> "svc-a"."""
    return path.lstrip("/").split("/", 1)[0]


class MeterUpstream:
    """Counts every request it receives by (buyer, first path segment),
    where the buyer is the X-Toll-Buyer header the gate added; keeps the
    X-Test-Tag values; answers 200 {"ok":true} unless the query asks for
    ?status=NNN, ?delay_ms=N, ?spoof=1 (copies of every billing header,
    prefixes X-Toll- and X-ACF-, with wrong values), ?units=V (an X-Units
    header of value V, ?units_times=N times), ?size=N (a JSON body of N
    bytes, N >= 12) or ?chunked=1 (the body in chunks of 4 KiB)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {}
        self._tags = []
        self._total = 0
        self._server, self._thread = serve_upstream(_Server, _Handler, self,
                                                    "meter-upstream")
        self.port = self._server.server_address[1]

    def _record(self, method, path, buyer, tag):
        k = (buyer, service_of(path))
        with self._lock:
            self._counts[k] = self._counts.get(k, 0) + 1
            self._total += 1
            if tag is not None:
                self._tags.append(tag)

    @property
    def total(self):
        with self._lock:
            return self._total

    def counts(self):
        """{(buyer, first path segment): requests}"""
        with self._lock:
            return dict(self._counts)

    def tags(self):
        with self._lock:
            return list(self._tags)

    def wait_total(self, n, timeout=10):
        wait_for(lambda: self.total >= n, timeout,
                 what="upstream to receive %d requests" % n)
        return self.total

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def meter_upstream():
    """A MeterUpstream for the test (import this fixture by name)."""
    u = MeterUpstream()
    yield u
    u.close()


def upstream_block(name, port, keepalive=32):
    return ("    upstream %s {\n        server 127.0.0.1:%d;\n"
            "        keepalive %d;\n    }\n" % (name, port, keepalive))


def proxy_to(name):
    return ('proxy_pass http://%s; proxy_http_version 1.1; '
            'proxy_set_header Connection "";' % name)


# --------------------------------------------------------------- Redis

def usage_key_re():
    return re.compile(r"^toll:usage:\{(?P<buyer>[^}]*)\}:(?P<day>\d{8})$")


INT_FIELDS = ("calls", "free_calls", "paid_calls", "amount_micros",
              "errors", "latency_ms", "prepaid_micros", "units")


def usage(rc):
    """The meter's hashes summed over days: {(buyer, service): {field:
    value}}, integer fields as int, provider as str.  A field that is not
    an integer string fails the caller's comparison (kept as str)."""
    out = {}
    pat = usage_key_re()
    for name in rc.scan_iter(match="toll:usage:*", count=1000):
        m = pat.match(name)
        if not m:
            continue
        buyer = m.group("buyer")
        for field, value in rc.hgetall(name).items():
            service, _, what = field.rpartition(":")
            rec = out.setdefault((buyer, service), {})
            if what in INT_FIELDS:
                try:
                    v = int(value)
                except ValueError:
                    rec[what] = "not an integer: %r" % value
                    continue
                if isinstance(rec.get(what, 0), int):
                    rec[what] = rec.get(what, 0) + v
            else:
                rec[what] = value
    return out


def usage_hash_names(rc):
    pat = usage_key_re()
    return sorted(n for n in rc.scan_iter(match="toll:usage:*", count=1000)
                  if pat.match(n))


def total(u, field="calls", service=None):
    return sum(rec.get(field, 0) for (b, s), rec in u.items()
               if service is None or s == service)


def project(u, fields=INT_FIELDS + ("provider",)):
    """usage() with only the fields named, for comparison to what a test
    expects (latency sums and the like left out)."""
    out = {}
    for k, rec in u.items():
        r = {f: v for f, v in rec.items() if f in fields}
        for f in fields:
            # a count never incremented may be absent: it reads as 0
            if f in INT_FIELDS and f not in r:
                r[f] = 0
        out[k] = r
    return out


def wait_usage(rc, expected, timeout=20, fields=None):
    """Waits until usage() (projected on `fields`, default: the fields in
    the first expected record) equals `expected` exactly; returns it.  On
    timeout fails with the last state and the difference."""
    if fields is None:
        fields = set()
        for rec in expected.values():
            fields |= set(rec)
    last = [None]

    def check():
        u = project(usage(rc), fields)
        last[0] = u
        return u == expected

    try:
        wait_for(check, timeout, interval=0.05, what="usage in Redis")
    except TimeoutError:
        raise AssertionError("Redis usage never equalled what was expected "
                             "within %ss:\n%s" % (timeout,
                                                  diff(expected, last[0])))
    return last[0]


def diff(expected, got):
    lines = []
    for k in sorted(set(expected) | set(got or {}), key=str):
        e = expected.get(k)
        g = (got or {}).get(k)
        if e != g:
            lines.append("  %r: expected %r, got %r" % (k, e, g))
    return "\n".join(lines) or "  (equal)"


def free_claimed(rc, buyer, service):
    v = rc.hget("toll:free:{%s}" % buyer, service)
    return None if v is None else int(v)


# ------------------------------------------------------------- headers

def billing(resp, prefix="X-Toll-"):
    """{short name: [values]} of the billing headers with `prefix`, e.g.
    {"Amount": ["0.05"]}; names not present are left out."""
    out = {}
    for name in HEADER_NAMES:
        vals = resp.header_all(prefix + name)
        if vals:
            out[name] = vals
    return out


def any_billing(resp):
    """Every response header that looks like a billing header, whatever
    the prefix (X-Toll-*, X-ACF-*)."""
    return [(k, v) for k, v in resp.headers
            if any(k.lower().endswith("-" + n.lower()) for n in HEADER_NAMES)
            and k.lower().startswith(("x-toll-", "x-acf-"))]


def one(resp, name, prefix="X-Toll-"):
    vals = resp.header_all(prefix + name)
    assert len(vals) == 1, "%s%s: %r in %r" % (prefix, name, vals,
                                                resp.headers)
    return vals[0]


ANY = "<any>"


def check_billing(resp, amount, free="false", remaining=None,
                  prefix="X-Toll-"):
    """Asserts the billing headers of a priced answer: one each; Amount
    the decimal string `amount`; Free-Tier `free`; Free-Remaining
    `remaining` (None: the header must be absent, ANY: not checked);
    Usage-Id 32 hex; Latency-Ms an integer >= 0.
    Returns (usage id, latency ms)."""
    uid = one(resp, "Usage-Id", prefix)
    assert USAGE_ID_RE.match(uid), uid
    assert one(resp, "Amount", prefix) == amount, resp.headers
    assert one(resp, "Free-Tier", prefix) == free, resp.headers
    if remaining == ANY:
        pass
    elif remaining is None:
        assert resp.header_all(prefix + "Free-Remaining") == [], resp.headers
    else:
        assert one(resp, "Free-Remaining", prefix) == str(remaining), \
            resp.headers
    lat = one(resp, "Latency-Ms", prefix)
    assert re.fullmatch(r"[0-9]+", lat), lat
    return uid, int(lat)


# ---------------------------------------------------------------- logs

def meter_log(ngx):
    """logs/meter.log as dicts (format METER_LOG_FORMAT)."""
    return log_records(ngx.read(os.path.join(ngx.prefix, "logs",
                                             "meter.log")))


# ---------------------------------------------------------------- load

class Load:
    """`threads` keep-alive client threads, each sending make(thread index,
    request number) -> (path, headers) as fast as answers come, until
    stop() or until `limit` requests were sent in all.  pause() returns
    once no request is in flight and holds every thread until resume().
    Answers are counted by status (and passed to on_response if given); a
    reused connection that the server closed is retried once on a new one
    (RFC 9112 section 9.3.1): the request never reached a worker."""

    def __init__(self, port, make, threads=4, limit=None, on_response=None):
        self.port = port
        self.make = make
        self.limit = limit
        self.on_response = on_response
        self._cond = threading.Condition()
        self._paused = False
        self._busy = 0
        self.sent = 0
        self.statuses = {}
        self.failures = []
        self.retried = 0
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,),
                                         daemon=True, name="load%d" % i)
                        for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _take(self):
        with self._cond:
            while self._paused and not self.stop_ev.is_set():
                self._cond.wait()
            if self.stop_ev.is_set():
                return False
            if self.limit is not None and self.sent >= self.limit:
                return False
            self.sent += 1
            self._busy += 1
            return True

    def _release(self):
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def _run(self, i):
        conn = client.KeepAlive(self.port, timeout=30)
        n = 0
        while self._take():
            try:
                path, headers = self.make(i, n)
                n += 1
                try:
                    reused = conn.sock is not None and conn.used > 0
                    try:
                        r = conn.request(path=path, headers=headers)
                    except (client.NoResponse, ConnectionResetError,
                            BrokenPipeError):
                        if not reused:
                            raise
                        with self._cond:
                            self.retried += 1
                        conn.connect()
                        r = conn.request(path=path, headers=headers)
                except Exception as e:  # noqa: BLE001 -- every error counts
                    with self._cond:
                        self.failures.append("%s: %r" % (path, e))
                    conn.close()
                    continue
                with self._cond:
                    self.statuses[r.status] = self.statuses.get(r.status,
                                                                0) + 1
                if self.on_response is not None:
                    self.on_response(i, path, headers, r)
            finally:
                self._release()
        conn.close()

    def done_count(self):
        with self._cond:
            return sum(self.statuses.values()) + len(self.failures)

    def pause(self, timeout=10):
        """Returns once every thread waits between two requests."""
        with self._cond:
            self._paused = True
            if not self._cond.wait_for(lambda: self._busy == 0, timeout):
                raise TimeoutError("load threads did not pause")

    def resume(self):
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self, timeout=30):
        self.stop_ev.set()
        self.resume()
        for t in self.threads:
            t.join(timeout)

    def join(self, timeout=120):
        """Waits for a `limit` run to end."""
        for t in self.threads:
            t.join(timeout)
        self.stop_ev.set()


# ----------------------------------------------------------------- wrk

WRK_SCRIPT = r"""
local keys = {}
local limit = 0
local done_n = 0
local bad = 0
local i = 0
local path = "/"
local reqs = {}

function init(args)
    path = args[1]
    limit = tonumber(args[2])
    for j = 3, #args do keys[#keys + 1] = args[j] end
    for j = 1, #keys do
        reqs[j] = wrk.format("GET", path,
                             {["Authorization"] = "Bearer " .. keys[j]})
    end
end

function request()
    i = i + 1
    return reqs[(i % #keys) + 1]
end

function response(status, headers, body)
    done_n = done_n + 1
    if status ~= 200 then bad = bad + 1 end
    if done_n >= limit then wrk.thread:stop() end
end
"""


def run_wrk(tmp_path, port, path, tokens, n, reached, threads=2,
            connections=8, max_s=90):
    """wrk sending about n requests rotating the tokens: each thread stops
    after n/threads answers (requests then in flight are abandoned), and
    wrk is interrupted (SIGINT: it reports and exits) once reached()
    says the n requests are through, e.g. the upstream's count.  Returns
    (completed requests, non-2xx count, wrk output)."""
    script = os.path.join(str(tmp_path), "rotate.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    per_thread = (n + threads - 1) // threads
    argv = [WRK, "-t%d" % threads, "-c%d" % connections, "-d%ds" % max_s,
            "--timeout", "10s", "-s", script,
            "http://127.0.0.1:%d%s" % (port, path), "--", path,
            str(per_thread)] + list(tokens)
    outf = os.path.join(str(tmp_path), "wrk.out")
    with open(outf, "w") as f:
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: reached() or p.poll() is not None, max_s + 10,
                 interval=0.05, what="wrk to send %d requests" % n)
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    with open(outf) as f:
        out = f.read()
    assert p.returncode == 0, out
    m = re.search(r"(\d+) requests in", out)
    assert m, out
    done = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    return done, non2xx, out


# -------------------------------------------------------------- h2load

def run_h2load(port, path, headers, n, clients=10, streams=20, timeout=120):
    """h2load -n n -c clients -m streams over h2c (prior knowledge).
    Returns {"done":, "succeeded":, "failed":, "errored":, "2xx":, ...}."""
    argv = [H2LOAD, "-n", str(n), "-c", str(clients), "-m", str(streams)]
    for k, v in headers:
        argv += ["-H", "%s: %s" % (k.lower(), v)]
    argv.append("http://127.0.0.1:%d%s" % (port, path))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, "
                  r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    assert m, out
    res = dict(zip(("total", "started", "done", "succeeded", "failed",
                    "errored"), map(int, m.groups())))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, "
                  r"(\d+) 5xx", out)
    assert m, out
    res.update(zip(("2xx", "3xx", "4xx", "5xx"), map(int, m.groups())))
    res["output"] = out
    return res
