"""The dashboard (toll_dashboard): the page, in a real browser.

The page is src/dashboard/dashboard.html, compiled into the module as
src/ngx_http_toll_dashboard_html.h by tools/embed_html.sh.  It polls its
own location with ?format=json and draws on <canvas>; for tests it says
what it drew: each chart canvas carries data-chart, data-points (points
drawn, all series) and data-series (series with a non-zero point), and
window.tollDashboard holds {polls, errors, lastError, history}.

    1. against the gate, with traffic: every chart draws, the decisions,
       the billed service, Redis UP and the service's name are there; a
       screenshot goes to $TOLL_ARTIFACTS (default <build>/artifacts/)
    2. the gate stops: the alert banner shows and errors grow, with no
       JavaScript error; the gate comes back (its counters from zero): the
       banner goes and the interval across the restart is skipped
    3. the page's answer: text/html, a Content-Security-Policy that allows
       nothing but the page itself and its own location, no external URL,
       the bytes of the source; the JSON it polls has what it reads
    4. the committed header is what tools/embed_html.sh makes of the page,
       and the script carries any bytes through a C compiler unchanged
    5. against a scripted metrics source (no nginx): known rates and
       quantiles, hostile label values shown as text, HTTP 500 and bad
       JSON shown, a counter reset skipped

The browser tests need /usr/bin/chromium and /usr/bin/chromedriver
(Debian's chromium and chromium-driver) and python3-selenium; without the
browser they are skipped.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import threading
import time

import pytest

from helpers import client
from helpers.httpd import QuietHandler, serve
from helpers.keys import build_dir, make_key
from helpers.procs import PROXY, wait_for


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HTML_SRC = "src/dashboard/dashboard.html"
HEADER = "src/ngx_http_toll_dashboard_html.h"
EMBED = "tools/embed_html.sh"

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

CSP = {
    "default-src": ["'none'"],
    "script-src": ["'unsafe-inline'"],
    "style-src": ["'unsafe-inline'"],
    "connect-src": ["'self'"],
    "img-src": ["'self'", "data:"],
}

CHARTS = ("requests", "billed", "redis", "services")

have_browser = os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER,
                                                           os.X_OK)
# make test installs them (make setup-test): a missing browser fails the
# browser's tests rather than skipping them, so that CI cannot pass
# without having run them


def source_bytes():
    with open(os.path.join(ROOT, HTML_SRC), "rb") as f:
        return f.read()


def artifacts_dir():
    d = os.environ.get("TOLL_ARTIFACTS") or os.path.join(build_dir(),
                                                         "artifacts")
    os.makedirs(d, exist_ok=True)
    return d


# ------------------------------------------------------------ the browser


@pytest.fixture
def browser():
    """Headless chromium, quit at the end of the test.  Ask for it after
    start_nginx: it is then quit before nginx stops, which matters,
    because chromium keeps a spare connection open that has never carried
    a request, and a gracefully stopping nginx waits for that one until
    client_header_timeout (60 s)."""
    if not have_browser:
        pytest.fail("needs %s and %s (make setup-test installs them)"
                    % (CHROMIUM, CHROMEDRIVER), pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("chromium is installed but selenium is not "
                    "(apt-get install python3-selenium; run the tests with "
                    "/usr/bin/python3)", pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu",
              "--window-size=1280,900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(15)
        driver.set_script_timeout(10)
        yield driver
    finally:
        driver.quit()


STATE_JS = """
var d = window.tollDashboard || {}, out = {charts: {}};
out.polls = d.polls; out.errors = d.errors; out.lastError = d.lastError;
out.history = (d.history || []).length;
out.gaps = (d.history || []).filter(function (p) { return p.gap; }).length;
document.querySelectorAll('canvas[data-chart]').forEach(function (c) {
    out.charts[c.getAttribute('data-chart')] = {
        points: +c.getAttribute('data-points'),
        series: +c.getAttribute('data-series')};
});
function text(id) {
    var e = document.getElementById(id);
    return e ? e.textContent : null;
}
out.legend = {};
['requests', 'billed', 'redis'].forEach(function (k) {
    out.legend[k] = Array.prototype.map.call(
        document.querySelectorAll('#lg-' + k + ' li span'),
        function (e) { return e.textContent; });
});
out.services = Array.prototype.map.call(
    document.querySelectorAll('#svc-list li'),
    function (e) { return e.textContent; });
var b = document.getElementById('redis-badge');
out.badge = b ? [b.textContent, b.getAttribute('data-state')] : null;
var banner = document.getElementById('banner');
out.banner = banner ? {hidden: banner.hidden,
                       role: banner.getAttribute('role'),
                       text: banner.textContent.replace(/\\s+/g, ' ').trim()}
                    : null;
out.workers = text('t-workers');
out.version = text('t-version');
return out;
"""


def page_state(driver):
    return driver.execute_script(STATE_JS)


def wait_page(driver, pred, timeout, what):
    """Polls the page's state until pred(state) holds; on timeout fails
    with the last state seen."""
    last = [None]

    def check():
        last[0] = page_state(driver)
        return pred(last[0])

    try:
        wait_for(check, timeout, interval=0.1, what=what)
    except TimeoutError as e:
        pytest.fail("%s; the page's state: %s" % (e, json.dumps(
            last[0], indent=1)), pytrace=False)
    return last[0]


def severe(driver, expected=()):
    """The browser's SEVERE console entries, except those matching one of
    the `expected` regexes."""
    return [e for e in driver.get_log("browser")
            if e.get("level") == "SEVERE"
            and not any(re.search(x, e.get("message", ""))
                        for x in expected)]


def painted_pixels(driver, chart):
    """Pixels of the chart's canvas that are not transparent."""
    return driver.execute_script("""
        var c = document.querySelector('canvas[data-chart="' + arguments[0]
                                       + '"]');
        var d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        var n = 0;
        for (var i = 3; i < d.length; i += 4) { if (d[i]) { n++; } }
        return n;""", chart)


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "%s is not a PNG" % path
    return struct.unpack(">II", head[16:24])


# -------------------------------------------------------------- the gate

HTTP_EXTRA = """
    toll_meter_flush 200ms;
    toll_plan tiny rate=1r/m burst=2;
"""

LOCATIONS = """
        location /weather/ {
            toll on;
            toll_service weather provider=acme price=0.01 currency=USDC
                         free_calls=3;
            %s
        }
        location = /toll/dashboard {
            toll_dashboard;
        }
        location = /toll/metrics {
            toll_metrics;
        }
        location = /ping {
            return 200 "pong\\n";
        }
""" % PROXY


def start_gate(start_nginx):
    return start_nginx(http_extra=HTTP_EXTRA, locations=LOCATIONS)


class Traffic:
    """Calls to /weather/ in a thread until stopped: a paying key (free,
    then billed), no key (401), and a key on the tiny plan (429 after its
    burst of 2)."""

    def __init__(self, port, paying, tiny):
        self.port = port
        self.calls = [[paying.bearer()], [], [tiny.bearer()]]
        self.statuses = {}
        self.error = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            while not self.stopping.is_set():
                for headers in self.calls:
                    r = client.request(self.port, path="/weather/today",
                                       headers=headers)
                    self.statuses[r.status] = self.statuses.get(
                        r.status, 0) + 1
                self.stopping.wait(0.02)
        except Exception as e:      # reported by the test, not lost
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(10)


def dashboard_url(ngx, query="?interval=500"):
    return "http://127.0.0.1:%d/toll/dashboard%s" % (ngx.port, query)


# ================================================ 1. with traffic


def test_dashboard_draws_live_traffic(start_nginx, redis_server, browser):
    ngx = start_gate(start_nginx)
    paying = make_key(redis_server, owner="buyer-a")
    tiny = make_key(redis_server, owner="buyer-b", plan="tiny")

    with Traffic(ngx.port, paying, tiny) as traffic:
        browser.get(dashboard_url(ngx))
        wait_page(browser, lambda s: (s["polls"] or 0) >= 4, 20,
                  "4 polls of the dashboard")
        st = wait_page(
            browser, lambda s: all(s["charts"][c]["points"] > 0
                                   for c in CHARTS)
            and s["charts"]["requests"]["series"] >= 2
            and s["charts"]["billed"]["series"] >= 1
            and {"passed", "unauthorized"} <= set(s["legend"]["requests"])
            and any(x.startswith("weather:") for x in s["services"]),
            20, "every chart to draw the traffic")
        shot = os.path.join(artifacts_dir(), "dashboard.png")
        browser.save_screenshot(shot)
        pixels = {c: painted_pixels(browser, c) for c in CHARTS}
    assert traffic.error is None, traffic.error
    assert traffic.statuses.get(200) and traffic.statuses.get(401), (
        traffic.statuses)
    assert traffic.statuses.get(429), traffic.statuses

    assert st["errors"] == 0, st["lastError"]
    assert set(st["charts"]) == set(CHARTS)
    assert "weather (USDC)" in st["legend"]["billed"], st["legend"]
    assert st["badge"] == ["UP", "up"], st["badge"]
    assert st["banner"]["hidden"], st["banner"]
    assert st["workers"] == "2", st["workers"]
    assert re.match(r"^\d+\.\d+", st["version"]), st["version"]
    for c in CHARTS:
        assert pixels[c] > 300, "chart %s painted %d pixels" % (c, pixels[c])
    assert severe(browser) == []

    w, h = png_size(shot)
    assert w >= 1200 and h >= 600, (w, h)
    assert os.path.getsize(shot) > 30000, (
        "%s is %d bytes: a blank page?" % (shot, os.path.getsize(shot)))


# ================================================ 2. the gate goes away


FAILED_FETCH = r"format=json.*(Failed to load resource|net::ERR_)"


def test_dashboard_reports_an_unreachable_gate(start_nginx, browser):
    ngx = start_gate(start_nginx)
    for _ in range(5):      # counters above zero, to see the restart
        assert client.request(ngx.port, path="/weather/x").status == 401

    browser.get(dashboard_url(ngx))
    st = wait_page(browser, lambda s: (s["polls"] or 0) >= 2, 15,
                   "2 polls")
    assert st["banner"]["hidden"] and st["errors"] == 0, st

    # a fast shutdown (SIGTERM): a graceful one would wait for the
    # browser's spare connection (see browser())
    ngx.proc.terminate()
    ngx.proc.wait(10)
    ngx.stop()
    down = wait_page(browser, lambda s: s["errors"] >= 2
                     and not s["banner"]["hidden"], 15,
                     "the banner and 2 failed polls")
    assert down["banner"]["role"] == "alert"
    assert re.match(r"Metrics unreachable since \d\d:\d\d:\d\d\b",
                    down["banner"]["text"]), down["banner"]
    assert down["lastError"] == "network error", down["lastError"]
    wait_page(browser, lambda s: s["errors"] >= down["errors"] + 2, 10,
              "polling to go on while the gate is down")
    assert browser.find_element("id", "banner").is_displayed()
    browser.save_screenshot(os.path.join(artifacts_dir(),
                                         "dashboard-unreachable.png"))

    ngx.start()
    polls = down["polls"]
    back = wait_page(browser, lambda s: s["polls"] >= polls + 2
                     and s["banner"]["hidden"], 15,
                     "the banner to go when the gate is back")
    # the counters restarted from zero: that interval is skipped
    assert back["gaps"] >= 1, back
    negative = browser.execute_script("""
        return tollDashboard.history.filter(function (p) {
            return !p.gap && [p.req, p.billed, p.svc].some(function (m) {
                return Object.keys(m).some(function (k) { return m[k] < 0; });
            }); }).length;""")
    assert negative == 0
    assert severe(browser, expected=[FAILED_FETCH]) == []


# ================================================ 3. the answer


def parse_csp(value):
    out = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            assert words[0] not in out, "%s twice in %r" % (words[0], value)
            out[words[0]] = sorted(words[1:])
    return out


EXTERNAL_RE = re.compile(
    rb"""(?:\b(?:src|href|action|formaction|poster|srcset|data)\s*=\s*["']?"""
    rb"""\s*(?:[a-z][a-z0-9+.-]*:)?//)|(?:url\(\s*["']?\s*(?:[a-z]+:)?//)"""
    rb"""|@import""", re.I)


def test_dashboard_answer(start_nginx):
    ngx = start_gate(start_nginx)
    r = client.request(ngx.port, path="/toll/dashboard?interval=500")
    assert r.status == 200, r
    assert r.header("Content-Type").split(";")[0].strip() == "text/html"
    csp = r.header_all("Content-Security-Policy")
    assert len(csp) == 1, r.headers
    assert parse_csp(csp[0]) == {k: sorted(v) for k, v in CSP.items()}

    page = r.body
    assert page == source_bytes(), (
        "the module serves another page than %s: regenerate %s (%s) and "
        "rebuild" % (HTML_SRC, HEADER, EMBED))
    assert b"http://" not in page and b"https://" not in page
    found = EXTERNAL_RE.findall(page)
    assert not found, found
    # what the page polls, and nothing else from its URL
    assert b'location.pathname + "?format=json"' in page

    r = client.request(ngx.port, path="/toll/dashboard?format=json")
    assert r.status == 200, (r, r.body[:200])
    assert r.header("Content-Type").split(";")[0].strip() == (
        "application/json")
    doc = r.json()
    assert abs(doc["time"] - time.time()) < 60, doc["time"]
    assert isinstance(doc["version"], str) and doc["version"]
    m = doc["metrics"]
    for name, kind in (("toll_requests_total", "counter"),
                       ("toll_billed_micros_total", "counter"),
                       ("toll_redis_commands_total", "counter"),
                       ("toll_redis_errors_total", "counter"),
                       ("toll_redis_up", "gauge"),
                       ("toll_redis_reply_duration_seconds", "histogram"),
                       ("toll_meter_backlog", "gauge"),
                       ("toll_limit_sync_backlog", "gauge"),
                       ("toll_workers", "gauge"),
                       ("toll_zone_used_bytes", "gauge"),
                       ("toll_zone_free_bytes", "gauge")):
        assert m[name]["type"] == kind, (name, m[name])
        assert isinstance(m[name]["samples"], list), name
    for s in m["toll_redis_reply_duration_seconds"]["samples"]:
        assert s["labels"] == {}
        les = [b["le"] for b in s["buckets"]]
        counts = [b["count"] for b in s["buckets"]]
        assert les[-1] == "+Inf" and counts == sorted(counts), s
        assert counts[-1] == s["count"], s
    assert [s["value"] for s in m["toll_workers"]["samples"]] == [2]


# ================================================ 4. the header


def test_committed_header_is_current(tmp_path):
    out = tmp_path / os.path.basename(HEADER)
    r = subprocess.run(["sh", EMBED, HTML_SRC, str(out)], cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    with open(os.path.join(ROOT, HEADER), "rb") as f:
        committed = f.read()
    assert out.read_bytes() == committed, (
        "%s is stale: run %s %s %s" % (HEADER, EMBED, HTML_SRC, HEADER))
    assert b"Do not edit" in committed and HTML_SRC.encode() in committed


DUMP_C = r"""
#include <stdio.h>
typedef unsigned char u_char;
#include "page.h"
int
main(void)
{
    size_t  n = NGX_HTTP_TOLL_DASHBOARD_HTML_LEN;
    return fwrite(ngx_http_toll_dashboard_html, 1, n, stdout) != n;
}
"""

AWKWARD = {
    "escapes": b'back\\slash "quoted" \ttab\r\nend \\" \\\\n\n',
    "trigraphs": b"??= ??/ ??' ??( ??) ??! ??< ??> ??- ??? ???= ?\n",
    "bytes": bytes(range(1, 256)) + b"\n",
    "utf8 then digits": "\u00e9\u20ac 1\u00e92\n".encode() + b"\x7f1\x1b9\n",
    "no final newline": b"<p>last line</p>",
    "blank lines": b"\n\n\n",
    "empty": b"",
}


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler")
@pytest.mark.parametrize("name", ["dashboard"] + sorted(AWKWARD))
def test_embedded_bytes_survive_the_compiler(tmp_path, name):
    data = source_bytes() if name == "dashboard" else AWKWARD[name]
    src = tmp_path / "page.html"
    src.write_bytes(data)
    r = subprocess.run(["sh", os.path.join(ROOT, EMBED), str(src),
                        str(tmp_path / "page.h")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    (tmp_path / "dump.c").write_text(DUMP_C)
    # -trigraphs: a "??=" left in a literal would change the bytes
    r = subprocess.run(["cc", "-std=c11", "-trigraphs", "-Wall", "-Wextra",
                        "-Werror", "-o", "dump", "dump.c"], cwd=tmp_path,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    r = subprocess.run([str(tmp_path / "dump")], stdout=subprocess.PIPE,
                       timeout=10)
    assert r.returncode == 0
    assert r.stdout == data


def test_embed_refuses_nul(tmp_path):
    src = tmp_path / "nul.html"
    src.write_bytes(b"a\0b\n")
    out = tmp_path / "nul.h"
    r = subprocess.run(["sh", os.path.join(ROOT, EMBED), str(src), str(out)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    assert r.returncode != 0 and b"NUL" in r.stderr
    assert not out.exists()


# ================================================ 5. a scripted source

HOSTILE = '<img src=x onerror="window.pwned=1">\u00e9'
REDIS_LE = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "+Inf"]
REDIS_STEP = [0, 50, 90, 100, 100, 100]   # cumulative, per poll


class Scripted:
    """Serves the page (from the source file, with the gate's CSP) and a
    metrics JSON whose clock advances 1 s per poll and whose counters
    advance by known amounts: 10 passed calls of HOSTILE, 2 unauthorized
    calls without a service, 0.05 USDC billed to HOSTILE, and Redis
    replies of which 50 took <= 1 ms, 40 <= 2.5 ms and 10 <= 5 ms."""

    def __init__(self):
        self.mode = "ok"
        self.polled = set()
        self.n = 0
        self.base = 1000
        self.t0 = time.time()
        owner = self

        class Handler(QuietHandler):
            def do_GET(self):
                owner.answer(self)

        self.server, self.thread = serve(Handler)
        self.port = self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def doc(self):
        self.n += 1
        k = self.base + self.n

        def fam(kind, samples):
            return {"type": kind, "help": "", "samples": samples}

        def one(v):
            return [{"labels": {}, "value": v}]

        return {"version": "9.9.9", "nginx_version": "1.22.1",
                "time": self.t0 + self.n, "metrics": {
                    "toll_requests_total": fam("counter", [
                        {"labels": {"service": HOSTILE,
                                    "decision": "passed"}, "value": 10 * k},
                        {"labels": {"service": "",
                                    "decision": "unauthorized"},
                         "value": 2 * k}]),
                    "toll_billed_micros_total": fam("counter", [
                        {"labels": {"service": HOSTILE, "currency": "USDC"},
                         "value": 50000 * k}]),
                    "toll_redis_commands_total": fam("counter", one(100 * k)),
                    "toll_redis_errors_total": fam("counter", one(0)),
                    "toll_redis_up": fam("gauge", one(0)),
                    "toll_redis_reply_duration_seconds": fam("histogram", [
                        {"labels": {}, "sum": 0.2 * k, "count": 100 * k,
                         "buckets": [{"le": le, "count": c * k}
                                     for le, c in zip(REDIS_LE,
                                                      REDIS_STEP)]}]),
                    "toll_workers": fam("gauge", one(3)),
                }}

    def answer(self, h):
        if h.path.startswith("/dash?format=json"):
            self.polled.add(h.path)
            if self.mode == "500":
                body, ctype, code = b"no", "text/plain", 500
            elif self.mode == "badjson":
                body, ctype, code = b'{"metrics": ', "application/json", 200
            else:
                body = json.dumps(self.doc()).encode()
                ctype, code = "application/json", 200
        elif h.path.startswith("/dash"):
            body, ctype, code = source_bytes(), "text/html", 200
        else:
            body, ctype, code = b"", "text/plain", 404
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Content-Security-Policy", "; ".join(
            "%s %s" % (k, " ".join(v)) for k, v in CSP.items()))
        h.end_headers()
        h.wfile.write(body)


@pytest.fixture
def scripted():
    s = Scripted()
    yield s
    s.close()


def test_dashboard_against_a_scripted_source(scripted, browser):
    browser.get("http://127.0.0.1:%d/dash?interval=500&format=html&x=1"
                % scripted.port)
    st = wait_page(browser, lambda s: (s["polls"] or 0) >= 3, 15, "3 polls")
    last = browser.execute_script(
        "var h = tollDashboard.history; return h[h.length - 1];")
    assert last["dt"] == pytest.approx(1.0)
    assert last["req"] == {"passed": pytest.approx(10),
                           "unauthorized": pytest.approx(2)}
    assert last["billed"] == {HOSTILE + " (USDC)": pytest.approx(0.05)}
    # histogram_quantile: 50 of 100 at <= 1 ms; the 99th is 9/10 into
    # the (2.5 ms, 5 ms] bucket
    assert last["p50"] == pytest.approx(0.001)
    assert last["p99"] == pytest.approx(0.00475)

    # label values are text, never markup
    assert HOSTILE in st["legend"]["billed"][0], st["legend"]
    assert any(x.startswith(HOSTILE + ":") for x in st["services"]), st
    assert any(x.startswith("(none):") for x in st["services"]), st
    assert browser.execute_script(
        "return [window.pwned, document.querySelectorAll('img').length]") \
        == [None, 0]
    assert st["badge"] == ["DOWN", "down"]
    assert st["workers"] == "3" and st["version"] == "9.9.9"

    for mode, error in (("500", "HTTP 500"), ("badjson", "not JSON")):
        scripted.mode = mode
        errors = st["errors"]
        st = wait_page(browser, lambda s: s["errors"] > errors
                       and s["lastError"] == error
                       and not s["banner"]["hidden"], 10,
                       "the banner for %s" % error)
        assert "Metrics unreachable since" in st["banner"]["text"]
    scripted.mode = "ok"
    polls = st["polls"]
    wait_page(browser, lambda s: s["polls"] >= polls + 1
              and s["banner"]["hidden"], 10, "the banner to go")

    # the source restarts: its counters go back to small values
    gaps = page_state(browser)["gaps"]
    scripted.base = -scripted.n + 1
    st = wait_page(browser, lambda s: s["gaps"] > gaps
                   and s["polls"] >= polls + 3, 10,
                   "the restart to be skipped")
    rates = browser.execute_script("""
        return tollDashboard.history.filter(function (p) { return !p.gap; })
            .map(function (p) { return p.req.passed; });""")
    assert rates and all(r == pytest.approx(10) for r in rates), rates
    assert severe(browser, expected=[r"format=json.* 500 "]) == []
    # the page's own parameters stay out of what it polls
    assert scripted.polled == {"/dash?format=json"}
