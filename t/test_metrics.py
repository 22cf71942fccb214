"""The operator's metrics: toll_metrics (issue 6).

Every test runs a real nginx (2 workers, so that the figures are read
from the shared zone, not from one worker), a real Redis and a counting
upstream.  Requests go on new connections, so both workers take some.
Counts are compared exactly: a scrape is taken once the traffic is over
and nothing else writes.

    1. format: Prometheus text 0.0.4 that promtool accepts, HELP and TYPE
       for each family, the JSON twin with the same samples
    2. exact counts: decisions, status classes, upstream errors, free and
       paid calls, the billed amount, the duration histogram
    3. Redis: up when idle, down and errors while away, reconnects, a
       request abandoned while parked on a frozen store
    4. the key cache, the zone, build info, reloads
    5. the endpoint: methods, formats, allow/deny, nginx -t
"""

import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from helpers import client
from helpers.caps import set_cap as set_caps
from helpers.keys import make_key
from helpers.meter import meter_upstream, proxy_to, upstream_block
from helpers.meter import micros as micros_of
from helpers.metrics import GATE_FAMILIES
from helpers.procs import wait_for

assert meter_upstream  # a fixture, used by name

PROXY_M = proxy_to("meterapi")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# every label a family may carry: bounded by the configuration
ALLOWED_LABELS = {"service", "decision", "status_class", "tier", "currency",
                  "credential", "le", "version", "nginx_version"}

DECISIONS = ("passed", "unauthorized", "bad_request", "rate_limited",
             "quota_exceeded", "payment_required", "spend_cap_exceeded",
             "store_unavailable", "error", "client_closed", "plugin_refused",
             "forbidden")

LOCATIONS = """
        location /weather/ {
            toll on;
            toll_service weather provider=acme price=0.05 free_calls=3;
            %(proxy)s
        }
        location /maps/ {
            toll on;
            toll_service maps provider=acme price=1.25 currency=EUR;
            %(proxy)s
        }
        location /plain/ {
            toll on;
            %(proxy)s
        }
        location = /toll/metrics {
            toll_metrics;
        }
        location = /guarded/metrics {
            allow 127.0.0.2;
            deny all;
            toll_metrics;
        }
        location = /toll/dashboard {
            toll_dashboard;
        }
"""


def start(start_nginx, up, **kw):
    """nginx with "weather" (0.05 USD, 3 free calls), "maps" (1.25 EUR),
    a gated location without a service, and the metrics endpoints."""
    return start_nginx(http_extra=upstream_block("meterapi", up.port)
                       + "    toll_meter_flush 200ms;\n",
                       locations=LOCATIONS % {"proxy": PROXY_M}, **kw)


# ------------------------------------------------------------ parsing

SAMPLE_RE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>.*)\})?'
    r' (?P<value>\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_text(text):
    """{family: {"type", "help", "samples": {(name, labels): value}}}, in
    the order the families come."""
    families = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_ = line[7:].split(" ", 1)
            current = families.setdefault(name, {"samples": {}})
            current["help"] = help_
            continue
        if line.startswith("# TYPE "):
            name, type_ = line[7:].split(" ", 1)
            assert name in families, "TYPE before HELP: %r" % line
            families[name]["type"] = type_
            continue
        assert not line.startswith("#"), line
        m = SAMPLE_RE.match(line)
        assert m, "not a sample line: %r" % line
        labels = tuple(LABEL_RE.findall(m.group("labels") or ""))
        assert current is not None
        key = (m.group("name"), labels)
        assert key not in current["samples"], "duplicate sample %r" % (key,)
        current["samples"][key] = m.group("value")
    return families


def scrape(ngx, path="/toll/metrics", fmt=None):
    q = "" if fmt is None else "?format=" + fmt
    r = client.request(ngx.port, path=path + q)
    assert r.status == 200, (r, r.body)
    return r


def metrics(ngx):
    r = scrape(ngx)
    return parse_text(r.body.decode())


def value(fams, name, **labels):
    """The value of one sample; the family is found by prefix."""
    fam = None
    for f in fams:
        if name == f or (name.startswith(f + "_")
                         and fams[f].get("type") == "histogram"):
            fam = fams[f]
    assert fam is not None, "no family for %s" % name
    want = tuple(sorted(labels.items()))
    for (n, ls), v in fam["samples"].items():
        if n == name and tuple(sorted(ls)) == want:
            return float(v) if "." in v or "e" in v else int(v)
    raise AssertionError("no sample %s%r in %r" % (name, labels,
                                                   list(fam["samples"])))


def get(ngx, path, key=None, headers=()):
    h = list(headers)
    if key is not None:
        h.append(key.bearer())
    return client.request(ngx.port, path=path, headers=h)


def quiet(ngx):
    """Waits for the meter and the log phases: two scrapes a flush apart
    that read the same."""
    last = [None]

    def same():
        body = scrape(ngx).body
        # the zone's gauges move with the flush; the counters must not
        text = b"\n".join(l for l in body.splitlines()
                          if not l.startswith((b"toll_meter_backlog",
                                               b"toll_limit_sync_backlog",
                                               b"toll_zone_")))
        ok = text == last[0]
        last[0] = text
        if not ok:
            time.sleep(0.3)
        return ok

    wait_for(same, 10, what="metrics to settle")


# ------------------------------------------------------------ 1. format

def test_prometheus_text_passes_promtool(start_nginx, redis_server,
                                         meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    key = make_key(redis_server)
    for path in ("/weather/a", "/maps/b", "/plain/c", "/weather/x?status=503"):
        get(ngx, path, key)
    get(ngx, "/weather/a")
    r = scrape(ngx)
    assert r.header("Content-Type") == \
        "text/plain; version=0.0.4; charset=utf-8"
    assert r.header("Cache-Control") == "no-store"
    body = r.body.decode()
    fams = parse_text(body)

    for name, fam in fams.items():
        assert name.startswith("toll_"), name
        assert fam.get("help"), name
        assert fam.get("type") in ("counter", "gauge", "histogram"), name
        if fam["type"] == "counter":
            assert name.endswith("_total"), name
        for (_, labels) in fam["samples"]:
            for k, _ in labels:
                assert k in ALLOWED_LABELS, (name, k)

    # the buyer, the key, the secret are never in it
    assert key.key_id not in body
    assert key.owner not in body
    assert key.secret not in body

    if not os.path.exists(PROMTOOL):
        pytest.fail("promtool is not installed (apt-get install prometheus)")
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=r.body,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == b"", p.stdout.decode()


def test_every_family_the_issue_asks_for(start_nginx, meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    fams = metrics(ngx)
    assert {n: f["type"] for n, f in fams.items()} == GATE_FAMILIES
    assert list(fams) == list(GATE_FAMILIES)

    # every decision of every service is there from the start, at 0
    for svc in ("weather", "maps", ""):
        for d in DECISIONS:
            assert value(fams, "toll_requests_total", service=svc,
                         decision=d) == 0
    assert value(fams, "toll_billed_micros_total", service="maps",
                 currency="EUR") == 0
    assert value(fams, "toll_billed_micros_total", service="weather",
                 currency="USD") == 0
    assert value(fams, "toll_build_info", version="0.1.0",
                 nginx_version=nginx_version()) == 1
    assert value(fams, "toll_workers") == 2


def test_every_family_is_documented():
    """docs/metrics.md's table lists each family with its type, and no
    other."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "docs", "metrics.md")) as f:
        rows = re.findall(r"^\| `(toll_[a-z_]+)` \| (\w+) \|", f.read(),
                          re.M)
    assert dict(rows) == GATE_FAMILIES
    assert len(rows) == len(GATE_FAMILIES)


def series(fams):
    return sum(len(f["samples"]) for f in fams.values())


def test_series_do_not_grow_with_buyers(start_nginx, redis_server,
                                        meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    s = 2                                    # weather and maps
    c = 2                                    # USD and EUR: the prepaid
                                             # gauges, 5 per currency,
                                             # the caps', 3, and their
                                             # generation
    wait_for(lambda: "toll_cap_generation " in scrape(ngx).body.decode(),
             5, interval=0.1, what="the caps' generation read")
    assert series(metrics(ngx)) == 32 * (s + 1) + 3 * s + 30 + 8 * c + 1
    for i in range(20):
        key = make_key(redis_server, owner="buyer%d" % i)
        assert get(ngx, "/weather/%d" % i, key).status == 200
        assert get(ngx, "/plain/%d" % i, key).status == 200
    quiet(ngx)
    f = metrics(ngx)
    assert series(f) == 32 * (s + 1) + 3 * s + 30 + 8 * c + 1
    assert value(f, "toll_requests_total", service="weather",
                 decision="passed") == 20


def nginx_version():
    out = subprocess.run(["nginx", "-v"], stderr=subprocess.PIPE).stderr
    return re.search(rb"nginx/(\S+)", out).group(1).decode()


def test_json_has_the_same_samples(start_nginx, redis_server,
                                   meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    key = make_key(redis_server)
    for i in range(7):
        get(ngx, "/weather/%d" % i, key)
    get(ngx, "/maps/1")
    quiet(ngx)

    text = parse_text(scrape(ngx, fmt="prometheus").body.decode())
    r = scrape(ngx, fmt="json")
    assert r.header("Content-Type") == "application/json"
    doc = r.json()
    assert doc["version"] == "0.1.0"
    assert doc["nginx_version"] == nginx_version()
    assert abs(doc["time"] - time.time()) < 5

    moving = ("toll_meter_backlog", "toll_limit_sync_backlog",
              "toll_zone_used_bytes", "toll_zone_free_bytes")
    assert list(doc["metrics"]) == list(text)
    for name, fam in doc["metrics"].items():
        assert fam["type"] == text[name]["type"], name
        assert fam["help"] == text[name]["help"], name
        if name in moving:
            continue
        from_json = {}
        for s in fam["samples"]:
            labels = tuple(sorted(s["labels"].items()))
            if fam["type"] != "histogram":
                from_json[(name, labels)] = s["value"]
                continue
            for b in s["buckets"]:
                from_json[(name + "_bucket",
                           tuple(sorted(labels + (("le", b["le"]),))))] = \
                    b["count"]
            from_json[(name + "_sum", labels)] = s["sum"]
            from_json[(name + "_count", labels)] = s["count"]
        from_text = {(n, tuple(sorted(ls))): float(v) if "." in v else int(v)
                     for (n, ls), v in text[name]["samples"].items()}
        assert from_json == from_text, name


# ------------------------------------------------------- 2. exact counts

def test_exact_counts_per_service_and_decision(start_nginx, redis_server,
                                               meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    key = make_key(redis_server)

    for i in range(10):                       # 3 free, 7 paid at 0.05
        assert get(ngx, "/weather/%d" % i, key).status == 200
    for i in range(4):                        # 4 paid at 1.25 EUR
        assert get(ngx, "/maps/%d" % i, key).status == 200
    for i in range(2):                        # upstream 503, not charged
        assert get(ngx, "/maps/e?status=503", key).status == 503
    for i in range(5):
        assert get(ngx, "/weather/nokey").status == 401
    for i in range(3):
        r = get(ngx, "/plain/x", headers=[("X-API-Key", "garbage")])
        assert r.status == 401
    r = get(ngx, "/plain/x", key,
            headers=[("X-API-Key", "tk_other:secret")])
    assert r.status == 400
    assert get(ngx, "/plain/y", key).status == 200

    quiet(ngx)
    f = metrics(ngx)

    def req(svc, d):
        return value(f, "toll_requests_total", service=svc, decision=d)

    assert req("weather", "passed") == 10
    assert req("weather", "unauthorized") == 5
    assert req("maps", "passed") == 6
    assert req("", "unauthorized") == 3
    assert req("", "bad_request") == 1
    assert req("", "passed") == 1
    for svc in ("weather", "maps", ""):
        for d in ("rate_limited", "store_unavailable", "error",
                  "client_closed", "quota_exceeded", "payment_required",
                  "spend_cap_exceeded", "plugin_refused", "forbidden"):
            assert req(svc, d) == 0, (svc, d)

    assert value(f, "toll_responses_total", service="weather",
                 status_class="2xx") == 10
    assert value(f, "toll_responses_total", service="maps",
                 status_class="2xx") == 4
    assert value(f, "toll_responses_total", service="maps",
                 status_class="5xx") == 2
    assert value(f, "toll_upstream_errors_total", service="maps") == 2
    assert value(f, "toll_upstream_errors_total", service="weather") == 0

    assert value(f, "toll_metered_calls_total", service="weather",
                 tier="free") == 3
    assert value(f, "toll_metered_calls_total", service="weather",
                 tier="paid") == 7
    assert value(f, "toll_metered_calls_total", service="maps",
                 tier="paid") == 4
    assert value(f, "toll_billed_micros_total", service="weather",
                 currency="USD") == 7 * 50000
    assert value(f, "toll_billed_micros_total", service="maps",
                 currency="EUR") == 4 * 1250000

    # one observation per passed request, cumulative buckets
    assert value(f, "toll_request_duration_seconds_count",
                 service="weather") == 10
    assert value(f, "toll_request_duration_seconds_bucket",
                 service="weather", le="+Inf") == 10
    assert value(f, "toll_request_duration_seconds_count",
                 service="maps") == 6
    last = 0
    for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
               "2.5", "5", "10", "+Inf"):
        n = value(f, "toll_request_duration_seconds_bucket", service="maps",
                  le=le)
        assert n >= last
        last = n


def test_slow_upstream_lands_in_its_bucket(start_nginx, redis_server,
                                           meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    key = make_key(redis_server)
    assert get(ngx, "/maps/warm", key).status == 200
    quiet(ngx)
    before = metrics(ngx)
    for _ in range(3):
        assert get(ngx, "/maps/s?delay_ms=300", key).status == 200
    quiet(ngx)
    after = metrics(ngx)

    def diff(le):
        return (value(after, "toll_request_duration_seconds_bucket",
                      service="maps", le=le)
                - value(before, "toll_request_duration_seconds_bucket",
                        service="maps", le=le))

    assert diff("0.25") == 0
    assert diff("0.5") == 3
    s = (value(after, "toll_request_duration_seconds_sum", service="maps")
         - value(before, "toll_request_duration_seconds_sum",
                 service="maps"))
    assert 0.9 <= s < 1.5, s


def test_rate_limited_requests(start_nginx, redis_server, meter_upstream):
    ngx = start_nginx(
        http_extra=upstream_block("meterapi", meter_upstream.port)
        + "    toll_plan tiny rate=1r/m burst=2;\n"
        "    toll_default_plan tiny;\n",
        locations="""
        location /weather/ {
            toll on;
            toll_service weather provider=acme price=0.05;
            %s
        }
        location = /toll/metrics {
            toll_metrics;
        }
""" % PROXY_M)
    key = make_key(redis_server)
    statuses = [get(ngx, "/weather/%d" % i, key).status for i in range(8)]
    assert statuses.count(429) >= 5, statuses
    quiet(ngx)
    f = metrics(ngx)
    assert value(f, "toll_requests_total", service="weather",
                 decision="rate_limited") == statuses.count(429)
    assert value(f, "toll_requests_total", service="weather",
                 decision="passed") == statuses.count(200)


# ---------------------------------------------------------------- 3. Redis

def test_redis_up_without_traffic(start_nginx, meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    wait_for(lambda: value(metrics(ngx), "toll_redis_up") == 1, 5,
             what="toll_redis_up 1")
    f = metrics(ngx)
    assert value(f, "toll_redis_errors_total") == 0
    assert value(f, "toll_redis_reconnects_total") == 0


@pytest.mark.allow_log(r"redis .* unavailable", r"closed the connection",
                       r"meter counts not confirmed")
def test_redis_away_and_back(start_nginx, redis_server, meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    key = make_key(redis_server)
    assert get(ngx, "/weather/1", key).status == 200
    wait_for(lambda: value(metrics(ngx), "toll_redis_up") == 1, 5,
             what="toll_redis_up 1")
    f0 = metrics(ngx)
    assert value(f0, "toll_redis_commands_total") > 0
    assert value(f0, "toll_redis_reply_duration_seconds_count") > 0

    redis_server.kill()
    wait_for(lambda: value(metrics(ngx), "toll_redis_up") == 0, 10,
             what="toll_redis_up 0")

    # a key the cache does not know cannot be checked: 503
    other = "tk_" + "a" * 24 + ":" + "b" * 43
    r = get(ngx, "/weather/2", headers=[("X-API-Key", other)])
    assert r.status == 503, r
    # the log phase runs after the answer is out
    wait_for(lambda: value(metrics(ngx), "toll_requests_total",
                           service="weather",
                           decision="store_unavailable") == 1, 5,
             what="the 503 counted")
    f1 = metrics(ngx)
    assert value(f1, "toll_redis_errors_total") > \
        value(f0, "toll_redis_errors_total")

    redis_server.restart()
    wait_for(lambda: value(metrics(ngx), "toll_redis_up") == 1, 15,
             what="toll_redis_up back to 1")
    f2 = metrics(ngx)
    assert value(f2, "toll_redis_reconnects_total") >= 2   # each worker


@pytest.mark.allow_log(r"redis .* unavailable", r"timed out")
def test_request_abandoned_while_parked(start_nginx, redis_server,
                                        meter_upstream):
    ngx = start(start_nginx, meter_upstream, redis_timeout="3s")
    key = make_key(redis_server)
    redis_server.freeze()
    try:
        s = socket.create_connection(("127.0.0.1", ngx.port), timeout=5)
        s.sendall(client.build_request("GET", "/weather/p",
                                       [key.bearer()]))
        time.sleep(0.5)
        s.close()
        wait_for(lambda: value(metrics(ngx), "toll_requests_total",
                               service="weather",
                               decision="client_closed") == 1, 5,
                 what="client_closed counted")
    finally:
        redis_server.thaw()


# ----------------------------------------------------- 4. cache, zone, ...

def test_key_cache_hits_and_misses(start_nginx, redis_server,
                                   meter_upstream):
    ngx = start(start_nginx, meter_upstream, workers=1)
    key = make_key(redis_server)
    f0 = metrics(ngx)
    for _ in range(5):
        assert get(ngx, "/plain/c", key).status == 200
    f1 = metrics(ngx)

    def d(name):
        return (value(f1, name, credential="api_key")
                - value(f0, name, credential="api_key"))

    # the first lookup misses, and again after the Redis answer; then hits
    assert d("toll_key_cache_misses_total") in (1, 2)
    assert d("toll_key_cache_hits_total") == 5 - 1 + (
        d("toll_key_cache_misses_total") - 1)
    assert value(f1, "toll_key_cache_hits_total", credential="jwt") == 0


def test_zone_bytes_add_up(start_nginx, meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    f = metrics(ngx)
    used = value(f, "toll_zone_used_bytes")
    free = value(f, "toll_zone_free_bytes")
    assert used > 0 and free > 0
    assert used + free == 10 * 1024 * 1024


def test_cap_lease_gauges(start_nginx, redis_server, meter_upstream):
    """What this nginx holds of spend caps, per currency: after a call,
    the lease it keeps (10 prices granted, 1 held and charged) and the
    one entry holding it, nothing waiting for Redis; the generation as
    read; the lease gone back once idle (toll_prepaid_idle, 2 s)."""
    ngx = start(start_nginx, meter_upstream)
    rc = redis_server.client

    def gen():
        f = metrics(ngx)
        s = f["toll_cap_generation"]["samples"]
        return value(f, "toll_cap_generation") if s else None

    # no cap was ever set: generation 0, nothing held
    wait_for(lambda: gen() == 0, 5, interval=0.1,
             what="the caps' generation read")
    f = metrics(ngx)
    for cur in ("USD", "EUR"):
        for name in ("toll_cap_lease_micros", "toll_cap_leases",
                     "toll_cap_asking"):
            assert value(f, name, currency=cur) == 0, (name, cur)

    key = make_key(redis_server, owner="capped")
    set_caps(rc, "capped", monthly=micros_of("100"), currency="EUR")
    want = int(rc.get("toll:cap:gen"))
    assert want > 0
    wait_for(lambda: gen() == want, 5, interval=0.1,
             what="the new generation read")
    assert get(ngx, "/maps/1", key).status == 200
    f = metrics(ngx)
    assert value(f, "toll_cap_lease_micros", currency="EUR") == \
        9 * micros_of("1.25")
    assert value(f, "toll_cap_leases", currency="EUR") == 1
    assert value(f, "toll_cap_asking", currency="EUR") == 0
    assert value(f, "toll_cap_lease_micros", currency="USD") == 0
    assert value(f, "toll_cap_leases", currency="USD") == 0

    def back():
        f = metrics(ngx)
        return (value(f, "toll_cap_lease_micros", currency="EUR"),
                value(f, "toll_cap_leases", currency="EUR"),
                value(f, "toll_cap_asking", currency="EUR")) == (0, 0, 0)
    wait_for(back, 10, interval=0.2, what="the idle lease to go back")


def test_counters_survive_a_reload(start_nginx, redis_server,
                                   meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    key = make_key(redis_server)
    for i in range(4):
        assert get(ngx, "/maps/%d" % i, key).status == 200
    quiet(ngx)
    ngx.reload()
    wait_for(lambda: value(metrics(ngx), "toll_workers") == 2, 10,
             what="the new workers")
    f = metrics(ngx)
    assert value(f, "toll_requests_total", service="maps",
                 decision="passed") == 4
    assert value(f, "toll_billed_micros_total", service="maps",
                 currency="EUR") == 4 * 1250000


# ----------------------------------------------------- 5. the endpoint

def test_methods_formats_and_head(start_nginx, meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    r = client.request(ngx.port, method="POST", path="/toll/metrics",
                       body=b"x")
    assert r.status == 405
    r = client.request(ngx.port, path="/toll/metrics?format=xml")
    assert r.status == 400
    r = client.request(ngx.port, method="HEAD", path="/toll/metrics")
    assert r.status == 200 and r.body == b""
    assert int(r.header("Content-Length")) > 1000
    assert scrape(ngx, fmt="prometheus").body.startswith(b"# HELP ")
    # the dashboard's location answers the same JSON
    doc = scrape(ngx, path="/toll/dashboard", fmt="json").json()
    assert "toll_requests_total" in doc["metrics"]


def test_allow_deny_protects_it(start_nginx, meter_upstream):
    ngx = start(start_nginx, meter_upstream)
    r = client.request(ngx.port, path="/guarded/metrics")
    assert r.status == 403


def test_nginx_t_refuses(nginx_t, redis_server):
    redis = "toll_redis %s;" % redis_server.address
    cases = [
        ("server { listen 127.0.0.1:1; location /m { toll_metrics; } }",
         "need \"toll_redis\""),
        (redis + " server { listen 127.0.0.1:1;"
         " location /m { toll_metrics on; } }",
         "invalid number of arguments"),
        (redis + " server { listen 127.0.0.1:1;"
         " location /m { toll_metrics; toll_dashboard; } }",
         "is duplicate"),
        (redis + " server { listen 127.0.0.1:1; toll_metrics; }",
         "not allowed here"),
        (redis + " server { listen 127.0.0.1:1;"
         " location /a { toll on; toll_service s provider=p price=1; }"
         " location /b { toll on; toll_service s provider=p price=2"
         " currency=EUR; } }",
         "service \"s\" is sold in USD elsewhere"),
    ]
    for text, message in cases:
        rc, out, _ = nginx_t(text)
        assert rc != 0, text
        assert message in out, (text, out)
