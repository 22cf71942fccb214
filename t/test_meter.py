"""The meter, prices, billing headers and the free tier (issue 4).

The contract is /tmp/meter_spec.md.  Every test runs a real nginx (2
workers), a real Redis and a counting upstream (helpers/meter.py's
MeterUpstream, which also answers 5xx on request); flushes happen every
200 ms (toll_meter_flush).  Nothing sleeps to decide a result: Redis is
polled until it holds exactly what is expected, with a deadline, and the
final word is read after a graceful stop (which flushes everything), when
nothing can be written any more, so a late double count shows.

    1. nginx -t: prices, routes, services, the free tier's directives
    2. billing headers: values, route prices, usage ids, latency, prefix,
       upstream copies removed, refused calls carry none
    3. the meter in Redis: exact counts per buyer and service, the index,
       the usage log
    4. upstream 5xx and connect failures: counted as errors, not charged
       (charged with toll_charge_errors on)
    5. Redis faults during flushes: connections killed, Redis frozen past
       the timeout: nothing lost, nothing counted twice
    6. Redis down for a while: paid calls served, totals catch up
    7. the free tier
"""

import datetime
import decimal
import json
import random
import threading
import time

import pytest

from helpers import client
from helpers.keys import gen_key_id, gen_secret, make_key
from helpers.meter import (ANY, AMOUNT_RE, USAGE_ID_RE, Load, any_billing,
                           billing, check_billing, free_claimed, meter_http,
                           meter_log, meter_upstream, micros, project,
                           proxy_to, total, upstream_block, usage,
                           usage_hash_names, wait_usage)
from helpers.problem import check_problem
from helpers.procs import PROXY, free_port, wait_for
from helpers.upstream import header_values

assert meter_upstream  # a fixture, used by name

PROXY_M = proxy_to("meterapi")


def loc(path, body, proxy=PROXY_M, gated=True):
    return """
        location %s {
            %s
            %s
            %s
        }
""" % (path, "toll on;" if gated else "", body, proxy)


def start(start_nginx, up, locations, http_extra="", **kw):
    """nginx with the usage log, a 200 ms flush and `meterapi` (the
    MeterUpstream); /warm/ is gated without a service (it caches a key and
    meters nothing) and = /ping answers itself."""
    locations = (loc("/warm/", "") + locations + """
        location = /ping {
            return 200 "pong\\n";
        }
""")
    return start_nginx(http_extra=meter_http() + upstream_block(
        "meterapi", up.port) + http_extra, locations=locations, **kw)


def warm(ngx, *keys):
    for k in keys:
        r = client.request(ngx.port, path="/warm/x", headers=[k.bearer()])
        assert r.status == 200, (r, r.body)
        assert any_billing(r) == [], r.headers


def get(ngx, key, path, method="GET", headers=(), body=b""):
    h = list(headers)
    if key is not None:
        h.append(key.bearer())
    t = client.tag()
    r = client.request(ngx.port, method=method, path=path,
                       headers=h + [("X-Test-Tag", t)], body=body)
    r.tag = t
    return r


def expect(n, price, provider, free=0, errors=0, charged=None):
    """The usage record of n calls at `price` (decimal string), `free` of
    them free, `errors` of them upstream failures not charged (unless
    `charged` says how many calls were charged)."""
    if charged is None:
        charged = n - free - errors
    return {"calls": n, "free_calls": free, "paid_calls": charged,
            "amount_micros": charged * micros(price), "errors": errors,
            "provider": provider}


def final_usage(ngx, rc, expected):
    """Waits for the flush timer to bring Redis to `expected`, then stops
    nginx gracefully (which flushes whatever is left) and checks that
    nothing more arrived: the exact, final state."""
    wait_usage(rc, expected)
    ngx.stop()
    got = project(usage(rc), set().union(*expected.values())
                  if expected else {"calls"})
    assert got == expected, "after a graceful stop:\n%r\nexpected\n%r" % (
        got, expected)
    return got


def utc_days():
    now = datetime.datetime.now(datetime.timezone.utc)
    return {now.strftime("%Y%m%d"),
            (now - datetime.timedelta(seconds=120)).strftime("%Y%m%d")}


# ================================================= 1. nginx -t

def t_conf(loc_body, http_extra=""):
    return """
    toll_redis 127.0.0.1:%d timeout=500ms;
    toll_zone 10m;
    %s
    server {
        listen 127.0.0.1:%d;
        location /api/ {
            toll on;
            %s
            return 200;
        }
        location /other/ {
            toll on;
            return 200;
        }
    }
""" % (free_port(), http_extra, free_port(), loc_body)


def svc(params):
    return "toll_service sentiment %s;" % params


NOT_DECIMAL = "is not a decimal number"
MUST_FOLLOW = ('"toll_route" directive must follow "toll_service" in the '
               'same location')

# (id, location body, http extra, substrings the [emerg] line must hold;
#  a tuple is alternatives)
BAD = [
    ("7-decimals", svc("provider=acme price=0.0000001"), "",
     ['invalid price "0.0000001"', "has more than 6 decimal places"]),
    ("7th-decimal-zero", svc("provider=acme price=0.1000000"), "",
     ['invalid price "0.1000000"', "has more than 6 decimal places"]),
    ("negative", svc("provider=acme price=-0.05"), "",
     ['invalid price "-0.05"', "is negative"]),
    ("negative-int", svc("provider=acme price=-1"), "",
     ['invalid price "-1"', "is negative"]),
    ("overflow-by-one", svc("provider=acme price=9223372036854.775808"), "",
     ['invalid price "9223372036854.775808"',
      "is more than 9223372036854.775807"]),
    ("overflow-int", svc("provider=acme price=9223372036855"), "",
     ["is more than 9223372036854.775807"]),
    ("overflow-huge", svc("provider=acme price=184467440737095516160"), "",
     ["is more than 9223372036854.775807"]),
    ("exponent", svc("provider=acme price=1e3"), "",
     ['invalid price "1e3"', NOT_DECIMAL]),
    ("leading-dot", svc("provider=acme price=.5"), "",
     ['invalid price ".5"', NOT_DECIMAL]),
    ("word", svc("provider=acme price=abc"), "",
     ['invalid price "abc"', NOT_DECIMAL]),
    ("two-dots", svc("provider=acme price=1.2.3"), "",
     ['invalid price "1.2.3"', NOT_DECIMAL]),
    ("hex", svc("provider=acme price=0x10"), "",
     ['invalid price "0x10"', NOT_DECIMAL]),
    ("comma", svc("provider=acme price=0,05"), "",
     ['invalid price "0,05"', NOT_DECIMAL]),
    ("empty", svc("provider=acme price="), "",
     ['invalid price ""', "is empty"]),
    ("missing-price", svc("provider=acme"), "",
     ['"toll_service" must have "price" parameter']),
    ("missing-provider", svc("price=0.05"), "",
     ['"toll_service" must have "provider" parameter']),
    ("bad-name-slash", "toll_service a/b provider=acme price=1;", "",
     ['invalid service name "a/b"']),
    ("bad-name-colon", "toll_service a:b provider=acme price=1;", "",
     ['invalid service name "a:b"']),
    ("bad-name-brace", "toll_service \"a{b}\" provider=acme price=1;", "",
     ["invalid service name"]),
    ("bad-name-space", 'toll_service "a b" provider=acme price=1;', "",
     ['invalid service name "a b"']),
    ("bad-provider", svc('"provider=a b" price=1'), "",
     ['invalid provider "a b"']),
    ("empty-provider", svc("provider= price=1"), "",
     ['invalid provider ""']),
    ("empty-currency", svc("provider=acme price=1 currency="), "",
     ["invalid currency"]),
    ("bad-free-calls", svc("provider=acme price=1 free_calls=-1"), "",
     ["invalid free_calls"]),
    ("word-free-calls", svc("provider=acme price=1 free_calls=ten"), "",
     ["invalid free_calls"]),
    ("unknown-parameter", svc("provider=acme price=1 colour=red"), "",
     ['invalid parameter "colour=red"']),
    ("duplicate-service", svc("provider=acme price=1") + svc(
        "provider=acme price=2"), "", ["is duplicate"]),
    ("route-before-service", "toll_route POST ^/api/x$ price=0.10; "
     + svc("provider=acme price=0.05"), "", [MUST_FOLLOW]),
    ("route-without-service", "toll_route POST ^/api/x$ price=0.10;", "",
     [MUST_FOLLOW]),
    ("bad-regex", svc("provider=acme price=0.05")
     + ' toll_route POST "^/api/(x" price=0.10;', "",
     [("pcre2_compile() failed", "pcre_compile() failed"), "^/api/(x"]),
    ("bad-method-lower", svc("provider=acme price=0.05")
     + " toll_route get ^/api/x$ price=0.10;", "",
     ['invalid method "get"']),
    ("bad-method-chars", svc("provider=acme price=0.05")
     + " toll_route PO-ST ^/api/x$ price=0.10;", "",
     ['invalid method "PO-ST"']),
    ("route-bad-price", svc("provider=acme price=0.05")
     + " toll_route POST ^/api/x$ price=0.0000001;", "",
     ['invalid price "0.0000001"', "has more than 6 decimal places"]),
    ("route-negative-price", svc("provider=acme price=0.05")
     + " toll_route POST ^/api/x$ price=-1;", "",
     ['invalid price "-1"', "is negative"]),
    ("route-missing-price", svc("provider=acme price=0.05")
     + " toll_route POST ^/api/x$ cost=1;", "",
     ['"toll_route" must have "price" parameter']),
    ("bad-prefix", 'toll_billing_header_prefix "X Toll";', "",
     ["invalid header prefix"]),
    ("bad-charge-errors", "toll_charge_errors maybe;", "",
     ['it must be "on" or "off"']),
    ("bad-meter-flush", "", "toll_meter_flush soon;",
     [("invalid value", "invalid")]),
]

# the free tier's directives (fail until the free tier is built)
BAD_FREE = [
    ("bad-free-lease", "", "toll_free_lease many;", ["invalid"]),
    ("bad-fallback", "toll_free_tier_fallback open;", "",
     ['invalid value "open"']),
]

GOOD = [
    ("one-micro", svc("provider=acme price=0.000001"), ""),
    ("max", svc("provider=acme price=9223372036854.775807"), ""),
    ("zero", svc("provider=acme price=0"), ""),
    ("integer", svc("provider=acme price=12"), ""),
    ("six-decimals-trailing-zeros", svc("provider=acme price=0.100000"), ""),
    ("full", svc("provider=acme price=0.05 currency=USDC free_calls=50"),
     ""),
    ("routes", svc("provider=acme price=0.05")
     + " toll_route POST ^/api/analyze$ price=0.10;"
     + ' toll_route * "^/api/(a|b)/[0-9]+$" price=0.000001;', ""),
    ("switches", svc("provider=acme price=0.05")
     + " toll_charge_errors on; toll_billing_headers off;"
     + " toll_billing_header_prefix X-ACF-;", "toll_meter_flush 200ms;"),
]

GOOD_FREE = [
    ("free-tier", svc("provider=acme price=0.05 free_calls=50")
     + " toll_free_tier_fallback paid;", "toll_free_lease 20;"),
    ("free-tier-closed", svc("provider=acme price=0.05 free_calls=5")
     + " toll_free_tier_fallback closed;", "toll_free_lease 1;"),
]


def assert_refused(rc, out, text, needles):
    assert rc != 0, "nginx -t accepted a bad config:\n%s\n%s" % (text, out)
    errors = [line for line in out.splitlines()
              if "[emerg]" in line or "[warn]" in line]
    assert errors, out
    msg = errors[0]
    assert "unknown directive" not in msg, msg
    for n in needles:
        alts = n if isinstance(n, tuple) else (n,)
        assert any(a in msg for a in alts), "%r not in %r" % (n, msg)
    assert "test failed" in out, out


@pytest.mark.parametrize("case", BAD + BAD_FREE, ids=lambda c: c[0])
def test_config_refused(nginx_t, case):
    _, body, http_extra, needles = case
    text = t_conf(body, http_extra)
    rc, out, text = nginx_t(text)
    assert_refused(rc, out, text, needles)


@pytest.mark.parametrize("case", GOOD + GOOD_FREE, ids=lambda c: c[0])
def test_config_accepted(nginx_t, case):
    _, body, http_extra = case
    rc, out, text = nginx_t(t_conf(body, http_extra))
    assert rc == 0, "nginx -t refused a good config:\n%s\n%s" % (text, out)
    assert "[emerg]" not in out and "[warn]" not in out, out


# ============================================ 2. billing headers

PRICES = (loc("/svc-a/", "toll_service svc-a provider=acme price=0.05;")
          + loc("/micro/", "toll_service micro provider=acme "
                "price=0.000001;")
          + loc("/max/", "toll_service max provider=acme "
                "price=9223372036854.775807;")
          + loc("/zero/", "toll_service zero provider=acme price=0;"))


@pytest.mark.parametrize("path,amount", [
    ("/svc-a/x", "0.05"),
    ("/micro/x", "0.000001"),
    ("/max/x", "9223372036854.775807"),
])
def test_billing_headers_plain_call(start_nginx, meter_upstream,
                                    redis_server, path, amount):
    ngx = start(start_nginx, meter_upstream, PRICES)
    # one call per buyer: two calls at the largest price would not fit in
    # one int64 sum (test_amount_sum_overflow_not_wrapped)
    keys = [make_key(redis_server, owner="buyer-plain%d" % i)
            for i in range(2)]
    ids = set()
    for k in keys:
        r = get(ngx, k, path)
        assert r.status == 200, (r, r.body)
        assert r.body == b'{"ok":true}'
        uid, lat = check_billing(r, amount)
        assert lat >= 0
        ids.add(uid)
    assert len(ids) == 2
    service = path.strip("/").split("/")[0]
    final_usage(ngx, redis_server.client, {
        ("buyer-plain%d" % i, service): {
            "calls": 1, "paid_calls": 1, "free_calls": 0, "errors": 0,
            "amount_micros": micros(amount), "provider": "acme"}
        for i in range(2)})


@pytest.mark.allow_log(r"meter overflow")
def test_amount_sum_overflow_not_wrapped(start_nginx, meter_upstream,
                                         redis_server):
    """Two calls of one buyer at the largest price: their sum does not fit
    in int64 micro-units.  The gate never wraps it: the second call is left
    out of the meter, whether the zone or Redis finds the overflow, and an
    alert names it (docs/metering.md)."""
    ngx = start(start_nginx, meter_upstream, PRICES)
    k = make_key(redis_server, owner="buyer-max")
    for _ in range(2):
        r = get(ngx, k, "/max/x")
        assert r.status == 200
        check_billing(r, "9223372036854.775807")
    wait_for(lambda: "meter overflow" in ngx.error_log_text(), 10,
             what="the overflow alert")
    ngx.stop()
    rec = usage(redis_server.client)[("buyer-max", "max")]
    assert rec["calls"] == 1, rec
    assert rec["amount_micros"] == micros("9223372036854.775807"), rec


def test_billing_zero_price(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream, PRICES)
    k = make_key(redis_server, owner="buyer-zero")
    r = get(ngx, k, "/zero/x")
    assert r.status == 200
    check_billing(r, "0")


ROUTES = (loc("/api/", "toll_service api provider=acme price=0.05;\n"
              "            toll_route POST ^/api/analyze$ price=0.10;")
          + loc("/first/", "toll_service first provider=acme price=0.01;\n"
                "            toll_route * ^/first/a price=0.02;\n"
                "            toll_route * ^/first/ab price=0.03;\n"
                "            toll_route GET ^/first/c price=0.04;"))

# (method, path, expected price)
ROUTE_CASES = [
    ("GET", "/api/analyze", "0.05"),
    ("POST", "/api/analyze", "0.10"),
    ("PUT", "/api/analyze", "0.05"),
    ("POST", "/api/analyze/more", "0.05"),
    ("POST", "/api/other", "0.05"),
    # the rule sees the normalised $uri, not the spelling sent
    ("POST", "/api//analyze", "0.10"),
    ("POST", "/api/./analyze", "0.10"),
    ("POST", "/api/%61nalyze", "0.10"),
    ("POST", "/api/x/../analyze", "0.10"),
    ("POST", "/api/analyze?status=200", "0.10"),
    # first match wins
    ("GET", "/first/ab", "0.02"),
    ("GET", "/first/a", "0.02"),
    ("GET", "/first/b", "0.01"),
    ("GET", "/first/c", "0.04"),
    ("POST", "/first/c", "0.01"),
]


def test_route_prices(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream, ROUTES)
    k = make_key(redis_server, owner="buyer-routes")
    sums = {}
    calls = {}
    bad = []
    for rnd in range(2):
        for method, path, price in ROUTE_CASES:
            r = get(ngx, k, path, method=method,
                    body=b"{}" if method != "GET" else b"")
            assert r.status == 200, (method, path, r, r.body)
            amount = r.header("X-Toll-Amount")
            if amount is None or not AMOUNT_RE.match(amount) or \
                    decimal.Decimal(amount) != decimal.Decimal(price):
                bad.append("%s %s: X-Toll-Amount %r, expected %s" % (
                    method, path, amount, price))
                continue
            svc_name = path.strip("/").split("/")[0]
            sums[svc_name] = sums.get(svc_name, 0) + micros(amount)
            calls[svc_name] = calls.get(svc_name, 0) + 1
    assert not bad, "\n".join(bad)
    assert decimal.Decimal("0.10") == decimal.Decimal(
        get(ngx, k, "/api/analyze", "POST", body=b"{}")
        .header("X-Toll-Amount"))
    sums["api"] += micros("0.10")
    calls["api"] += 1
    final_usage(ngx, redis_server.client, {
        ("buyer-routes", s): {"calls": calls[s], "paid_calls": calls[s],
                              "amount_micros": sums[s]}
        for s in calls})


def test_usage_ids_unique(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream, PRICES)
    keys = [make_key(redis_server, owner="buyer-id%d" % i) for i in range(2)]
    ids = []
    conns = [client.KeepAlive(ngx.port) for _ in range(4)]
    try:
        for i in range(200):
            c = conns[i % 4]
            r = c.request(path="/svc-a/x",
                          headers=[keys[i % 2].bearer()])
            assert r.status == 200, (r, r.body)
            ids.append(r.header("X-Toll-Usage-Id"))
    finally:
        for c in conns:
            c.close()
    bad = [u for u in ids if u is None or not USAGE_ID_RE.match(u)]
    assert not bad, bad[:5]
    assert len(set(ids)) == 200, "%d distinct usage ids in 200 calls" % len(
        set(ids))


def test_latency_ms(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream, PRICES)
    k = make_key(redis_server, owner="buyer-lat")
    warm(ngx, k)
    r = get(ngx, k, "/svc-a/x")
    _, fast = check_billing(r, "0.05")
    assert 0 <= fast <= r.elapsed * 1000 + 1, (fast, r.elapsed)
    r = get(ngx, k, "/svc-a/x?delay_ms=300")
    assert r.status == 200
    _, slow = check_billing(r, "0.05")
    # arrival to the answer's headers: it holds the upstream's 300 ms and
    # no more than the client saw
    assert 300 <= slow <= r.elapsed * 1000 + 1, (slow, r.elapsed)


ACF = (loc("/acf/", "toll_service acf provider=acme price=0.05;\n"
           "            toll_billing_header_prefix X-ACF-;")
       + loc("/nohdr/", "toll_service nohdr provider=acme price=0.05;\n"
             "            toll_billing_headers off;"))


def test_header_prefix_acf(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream, PRICES + ACF)
    k = make_key(redis_server, owner="buyer-acf")
    for _ in range(2):
        r = get(ngx, k, "/acf/x")
        assert r.status == 200
        check_billing(r, "0.05", prefix="X-ACF-")
        assert billing(r, "X-Toll-") == {}, r.headers
        # upstream copies with the prefix are replaced by the gate's
        r = get(ngx, k, "/acf/x?spoof=1")
        assert r.status == 200
        uid, lat = check_billing(r, "0.05", prefix="X-ACF-")
        assert uid != "f" * 32 and lat != 12345, r.headers


def test_billing_headers_off_still_metered(start_nginx, meter_upstream,
                                           redis_server):
    ngx = start(start_nginx, meter_upstream, PRICES + ACF)
    k = make_key(redis_server, owner="buyer-nohdr")
    for _ in range(3):
        r = get(ngx, k, "/nohdr/x")
        assert r.status == 200
        assert any_billing(r) == [], r.headers
    final_usage(ngx, redis_server.client, {
        ("buyer-nohdr", "nohdr"): expect(3, "0.05", "acme")})


def test_upstream_copies_removed(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream, PRICES)
    k = make_key(redis_server, owner="buyer-spoof")
    for _ in range(2):
        r = get(ngx, k, "/svc-a/x?spoof=1")
        assert r.status == 200
        # one of each, the gate's own; the upstream sent X-Toll-* and
        # x-toll-* copies of all five, Free-Remaining included (this
        # service has no free tier: the header must not appear at all)
        uid, lat = check_billing(r, "0.05")
        assert uid != "f" * 32, r.headers
        assert lat != 12345, r.headers
    final_usage(ngx, redis_server.client, {
        ("buyer-spoof", "svc-a"): expect(2, "0.05", "acme")})


def test_refused_calls_carry_no_billing_and_are_not_metered(
        start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream, PRICES,
                http_extra="    toll_plan tiny rate=1r/m;\n",
                redis_timeout="300ms")
    k = make_key(redis_server, owner="buyer-ok")
    tiny = make_key(redis_server, owner="buyer-tiny", plan="tiny")

    # no key, a malformed one, a wrong secret: 401
    for headers in ([], [("Authorization", "Bearer nonsense")],
                    [("X-API-Key", "%s:%s" % (k.key_id, gen_secret()))]):
        for _ in range(2):
            r = get(ngx, None, "/svc-a/x", headers=headers)
            assert r.status == 401, (r, r.body)
            assert any_billing(r) == [], r.headers

    # a plan of one call a minute: one 200 (billed), then 429s
    r = get(ngx, tiny, "/svc-a/x")
    assert r.status == 200, (r, r.body)
    check_billing(r, "0.05")
    for _ in range(3):
        r = get(ngx, tiny, "/svc-a/x")
        assert r.status == 429, (r, r.body)
        assert any_billing(r) == [], r.headers

    # Redis not answering, a key never seen: 503
    redis_server.freeze()
    try:
        for _ in range(2):
            r = get(ngx, None, "/svc-a/x", headers=[
                ("X-API-Key", gen_key_id() + ":" + gen_secret())])
            check_problem(r, 503, "store_unavailable")
            assert any_billing(r) == [], r.headers
    finally:
        redis_server.thaw()

    r = get(ngx, k, "/svc-a/x")
    assert r.status == 200
    check_billing(r, "0.05")

    assert meter_upstream.total == 2
    final_usage(ngx, redis_server.client, {
        ("buyer-tiny", "svc-a"): expect(1, "0.05", "acme"),
        ("buyer-ok", "svc-a"): expect(1, "0.05", "acme")})


# ============================================= 3. the meter in Redis

TWO = (loc("/svc-a/", "toll_service svc-a provider=acme price=0.05;")
       + loc("/svc-b/", "toll_service svc-b provider=globex price=1.234567;")
       + loc("/open/", "", gated=False))


def test_meter_exact_per_buyer_and_service(start_nginx, meter_upstream,
                                           redis_server):
    ngx = start(start_nginx, meter_upstream, TWO)
    rc = redis_server.client
    buyers = ["buyer-%d" % i for i in range(3)]
    keys = {b: make_key(redis_server, owner=b) for b in buyers}
    plan = {}       # (buyer, service) -> calls
    for i, b in enumerate(buyers):
        plan[(b, "svc-a")] = 3 * (i + 1)
        plan[(b, "svc-b")] = 2 * (i + 2)
    prices = {"svc-a": ("0.05", "acme"), "svc-b": ("1.234567", "globex")}

    # interleaved, on a few keep-alive connections and some new ones
    work = [(b, s) for (b, s), n in plan.items() for _ in range(n)]
    work = work[::2] + work[1::2]
    conns = [client.KeepAlive(ngx.port) for _ in range(3)]
    seen = {}       # tag -> (buyer, service, usage id, amount)
    amounts_sum = 0
    try:
        for i, (b, s) in enumerate(work):
            t = client.tag()
            headers = [keys[b].bearer(), ("X-Test-Tag", t)]
            if i % 4 == 3:
                r = client.request(ngx.port, path="/%s/q%d" % (s, i),
                                   headers=headers)
            else:
                r = conns[i % 3].request(path="/%s/q%d" % (s, i),
                                         headers=headers)
            assert r.status == 200, (r, r.body)
            uid, _ = check_billing(r, prices[s][0])
            seen[t] = (b, s, uid, r.header("X-Toll-Amount"))
            amounts_sum += micros(r.header("X-Toll-Amount"))
    finally:
        for c in conns:
            c.close()
    # ungated and unpriced calls are not metered
    assert client.request(ngx.port, path="/open/x").status == 200
    warm(ngx, *keys.values())

    expected = {k: expect(n, prices[k[1]][0], prices[k[1]][1])
                for k, n in plan.items()}
    assert meter_upstream.counts() == dict(
        list(plan.items()) + [(("", "open"), 1), (("buyer-0", "warm"), 1),
                              (("buyer-1", "warm"), 1),
                              (("buyer-2", "warm"), 1)])
    got = final_usage(ngx, rc, expected)
    assert total(got, "amount_micros") == amounts_sum

    # the hashes: one per buyer and day, hash-tagged, in the index
    names = usage_hash_names(rc)
    assert sorted({n.split("}")[0] + "}" for n in names}) == sorted(
        "toll:usage:{%s}" % b for b in buyers), names
    for n in names:
        assert n.rsplit(":", 1)[1] in utc_days(), n
    index = rc.smembers("toll:usage:index")
    assert set(names) <= index, (names, index)
    for b in buyers:
        fl = "toll:usage:{%s}:flushes" % b
        assert rc.type(fl) == "zset", (fl, rc.type(fl))
        assert rc.zcard(fl) >= 1

    # the usage log: one line per call, as the headers said
    lines = {rec["tag"]: rec for rec in meter_log(ngx) if rec.get("tag")}
    for t, (b, s, uid, amount) in seen.items():
        rec = lines.get(t)
        assert rec is not None, "no usage log line for %s" % t
        assert (rec["buyer"], rec["service"], rec["usage"], rec["amount"],
                rec["provider"], rec["free"]) == (
                    b, s, uid, amount, prices[s][1], "false"), rec
        assert decimal.Decimal(rec["price"]) == decimal.Decimal(
            prices[s][0]), rec
    log_sum = sum(micros(lines[t]["amount"]) for t in seen)
    assert log_sum == amounts_sum == total(got, "amount_micros")


def test_meter_latency_sum(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream, TWO)
    k = make_key(redis_server, owner="buyer-slow")
    lat = 0
    for _ in range(3):
        r = get(ngx, k, "/svc-a/x?delay_ms=200")
        assert r.status == 200
        lat += int(r.header("X-Toll-Latency-Ms"))
    wait_usage(redis_server.client, {("buyer-slow", "svc-a"): {"calls": 3}})
    ngx.stop()
    rec = usage(redis_server.client)[("buyer-slow", "svc-a")]
    # the sum holds at least the upstream's 3 x 200 ms
    assert isinstance(rec.get("latency_ms"), int), rec
    assert 600 <= rec["latency_ms"] <= lat + 3 * 50, (rec, lat)


# ========================================= 4. upstream errors

ERRS = (loc("/err/", "toll_service err provider=acme price=0.05;")
        + loc("/errc/", "toll_service errc provider=acme price=0.05;\n"
              "            toll_charge_errors on;")
        + loc("/slow/", "toll_service slow provider=acme price=0.05;\n"
              "            proxy_read_timeout 300ms;"))


def dead_locs(port):
    return (loc("/dead/", "toll_service dead provider=acme price=0.05;",
                proxy="proxy_pass http://127.0.0.1:%d;" % port)
            + loc("/deadc/", "toll_service deadc provider=acme "
                  "price=0.05;\n            toll_charge_errors on;",
                  proxy="proxy_pass http://127.0.0.1:%d;" % port))


def test_upstream_errors_not_charged(start_nginx, meter_upstream,
                                     redis_server):
    closed = free_port()
    ngx = start(start_nginx, meter_upstream, ERRS + dead_locs(closed))
    k = make_key(redis_server, owner="buyer-err")
    warm(ngx, k)

    cases = [
        # (path, status the client sees, amount)
        ("/err/x?status=500", 500, "0"),
        ("/err/x?status=502", 502, "0"),
        ("/err/x?status=503", 503, "0"),
        ("/err/x?status=504", 504, "0"),
        ("/err/x?status=404", 404, "0.05"),     # a 4xx is an answer
        ("/err/x", 200, "0.05"),
        ("/dead/x", 502, "0"),                  # connect refused
        ("/slow/x?delay_ms=1500", 504, "0"),    # nginx's read timeout
        ("/slow/x", 200, "0.05"),
        ("/errc/x?status=500", 500, "0.05"),
        ("/errc/x?status=503", 503, "0.05"),
        ("/errc/x", 200, "0.05"),
        ("/deadc/x", 502, "0.05"),
    ]
    for _ in range(2):
        for path, status, amount in cases:
            r = get(ngx, k, path)
            assert r.status == status, (path, r, r.body)
            check_billing(r, amount)

    final_usage(ngx, redis_server.client, {
        ("buyer-err", "err"): expect(12, "0.05", "acme", errors=8),
        ("buyer-err", "dead"): expect(2, "0.05", "acme", errors=2),
        ("buyer-err", "slow"): expect(4, "0.05", "acme", errors=2),
        ("buyer-err", "errc"): expect(6, "0.05", "acme", errors=4,
                                      charged=6),
        ("buyer-err", "deadc"): expect(2, "0.05", "acme", errors=2,
                                       charged=2),
    })


# ====================================== 5. Redis faults during flushes

def meter_load(ngx, keys, services=("svc-a", "svc-b"), threads=3,
               on_response=None):
    def make(i, n):
        k = keys[(i + n) % len(keys)]
        s = services[n % len(services)]
        return "/%s/x" % s, [k.bearer()]
    return Load(ngx.port, make, threads=threads,
                on_response=on_response).start()


def expected_from_upstream(up, prices):
    return {(b, s): expect(n, prices[s][0], prices[s][1])
            for (b, s), n in up.counts().items() if s in prices}


PRICES_TWO = {"svc-a": ("0.05", "acme"), "svc-b": ("1.234567", "globex")}


def wait_progress(load, n, timeout=10):
    mark = load.done_count()
    wait_for(lambda: load.done_count() >= mark + n, timeout,
             what="load to progress by %d" % n)


def test_meter_connection_killed_during_flushes(start_nginx, meter_upstream,
                                                redis_server):
    ngx = start(start_nginx, meter_upstream, TWO)
    keys = [make_key(redis_server, owner="kill-%d" % i) for i in range(3)]
    warm(ngx, *keys)
    rc = redis_server.client
    meter_upstream_before = meter_upstream.total

    load = meter_load(ngx, keys)
    kills = killed = 0
    rnd = random.Random(4)
    t_end = time.monotonic() + 5.0
    try:
        wait_progress(load, 50)
        while time.monotonic() < t_end:
            # once a flush got through on the (re)connected link, kill
            # the gate's connections at a random moment within the next
            # flush interval: before, during or after a flush
            applied = flush_stats(rc, keys)[1]
            wait_for(lambda: flush_stats(rc, keys)[1] > applied, 10,
                     interval=0.005, what="a flush to get through")
            pause_until = time.monotonic() + rnd.uniform(0, 0.25)
            while time.monotonic() < pause_until:
                time.sleep(0.005)      # pacing the fault, deciding nothing
            killed += rc.client_kill_filter(_type="normal")
            kills += 1
    finally:
        load.stop()
    print("CLIENT KILL x%d (%d connections), calls %d, statuses %r"
          % (kills, killed, load.done_count(), load.statuses))
    assert killed >= 10, "too few connections killed: %d" % killed
    assert not load.failures, load.failures[:5]
    assert set(load.statuses) == {200}, load.statuses
    assert meter_upstream.total - meter_upstream_before == \
        load.statuses[200]
    final_usage(ngx, rc, expected_from_upstream(meter_upstream, PRICES_TWO))
    sent, applied = flush_stats(rc, keys)
    print("flush scripts run %d, flush ids applied %d" % (sent, applied))


def test_meter_redis_frozen_past_timeout_during_flushes(
        start_nginx, meter_upstream, redis_server):
    """A flush that times out has often been applied (it sat in Redis's
    socket buffer): the retry under the same flush id must be skipped."""
    ngx = start(start_nginx, meter_upstream, TWO, redis_timeout="300ms")
    keys = [make_key(redis_server, owner="frz-%d" % i) for i in range(3)]
    warm(ngx, *keys)
    rc = redis_server.client
    load = meter_load(ngx, keys)
    try:
        for _ in range(4):
            wait_progress(load, 150)
            redis_server.freeze()
            try:
                # calls go on (cached keys); flushes pile up and time out
                wait_progress(load, 100)
                t_thaw = time.monotonic() + 0.7
                wait_for(lambda: time.monotonic() >= t_thaw, 5,
                         what="frozen past the 300 ms timeout")
            finally:
                redis_server.thaw()
    finally:
        load.stop()
    assert not load.failures, load.failures[:5]
    assert set(load.statuses) == {200}, load.statuses
    final_usage(ngx, rc, expected_from_upstream(meter_upstream, PRICES_TWO))
    sent, applied = flush_stats(rc, keys)
    print("flush scripts run %d, flush ids applied %d, calls %d"
          % (sent, applied, load.done_count()))
    # the fault this test is about did happen: flushes Redis ran twice
    assert sent > applied, "no flush was sent twice (%d, %d)" % (sent,
                                                                 applied)


def flush_stats(rc, keys):
    """(meter scripts Redis ran, flush ids it applied): more runs than ids
    means some flush came again and was skipped."""
    st = rc.info("commandstats")
    sent = sum(int(v["calls"]) - int(v.get("failed_calls", 0))
               for k, v in st.items()
               if k in ("cmdstat_eval", "cmdstat_evalsha"))
    applied = sum(rc.zcard("toll:usage:{%s}:flushes" % k.owner)
                  for k in keys)
    return sent, applied


# =========================================== 6. Redis down for a while

def test_meter_catches_up_after_redis_outage(start_nginx, meter_upstream,
                                             redis_server):
    ngx = start(start_nginx, meter_upstream, TWO, redis_timeout="300ms")
    keys = [make_key(redis_server, owner="out-%d" % i) for i in range(3)]
    warm(ngx, *keys)     # cached: calls go on without Redis
    bad = []
    lock = threading.Lock()

    def on_response(i, path, headers, r):
        s = path.split("/")[1]
        try:
            check_billing(r, PRICES_TWO[s][0])
        except AssertionError as e:
            with lock:
                bad.append("%s: %s" % (path, e))

    redis_server.kill()
    t_down = time.monotonic()
    load = meter_load(ngx, keys, on_response=on_response)
    try:
        # down for 2 s at least: ten flush intervals, reconnect attempts
        wait_for(lambda: load.done_count() >= 300
                 and time.monotonic() - t_down >= 2.0, 30,
                 what="300 calls and 2 s with Redis down")
        during = load.done_count()
        redis_server.start()
        for k in keys:
            k.write(redis_server.client)
        wait_progress(load, 150)
    finally:
        load.stop()
    print("calls while Redis was down: %d; in all: %d"
          % (during, load.done_count()))
    assert not load.failures, load.failures[:5]
    assert set(load.statuses) == {200}, load.statuses
    assert not bad, bad[:5]
    # the new Redis started empty: it must now hold every call
    final_usage(ngx, redis_server.client,
                expected_from_upstream(meter_upstream, PRICES_TWO))


# ===================================================== 7. free tier

FREE = (loc("/free/", "toll_service free provider=acme price=0.05 "
            "free_calls=5;")
        + loc("/freepaid/", "toll_service freepaid provider=acme "
              "price=0.05 free_calls=5;\n"
              "            toll_free_tier_fallback paid;")
        + loc("/freeb/", "toll_service freeb provider=acme price=0.05 "
              "free_calls=5;")
        + loc("/svc-a/", "toll_service svc-a provider=acme price=0.05;"))


def test_free_tier_first_calls_free(start_nginx, meter_upstream,
                                    redis_server):
    ngx = start(start_nginx, meter_upstream, FREE)
    a = make_key(redis_server, owner="free-a")
    b = make_key(redis_server, owner="free-b")
    rc = redis_server.client
    for key in (a, b):
        for i in range(5):
            r = get(ngx, key, "/free/x")
            assert r.status == 200, (r, r.body)
            check_billing(r, "0", free="true", remaining=4 - i)
        for _ in range(3):
            r = get(ngx, key, "/free/x")
            assert r.status == 200
            check_billing(r, "0.05", free="false", remaining=0)
    # another service of the same buyer has its own 5
    for i in range(5):
        r = get(ngx, a, "/freeb/x")
        check_billing(r, "0", free="true", remaining=4 - i)
    r = get(ngx, a, "/freeb/x")
    check_billing(r, "0.05", free="false", remaining=0)

    for buyer in ("free-a", "free-b"):
        assert free_claimed(rc, buyer, "free") == 5, rc.hgetall(
            "toll:free:{%s}" % buyer)
    assert free_claimed(rc, "free-a", "freeb") == 5
    # the free counter is not a day's: no TTL
    assert rc.ttl("toll:free:{free-a}") == -1
    final_usage(ngx, rc, {
        ("free-a", "free"): expect(8, "0.05", "acme", free=5),
        ("free-b", "free"): expect(8, "0.05", "acme", free=5),
        ("free-a", "freeb"): expect(6, "0.05", "acme", free=5)})
    assert free_claimed(rc, "free-a", "free") == 5


def test_free_call_failed_upstream_given_back(start_nginx, meter_upstream,
                                              redis_server):
    ngx = start(start_nginx, meter_upstream, FREE)
    k = make_key(redis_server, owner="free-err")
    rc = redis_server.client
    free_ok = []
    r = get(ngx, k, "/free/x")
    check_billing(r, "0", free="true", remaining=4)
    free_ok.append(r)
    r = get(ngx, k, "/free/x?status=500")
    assert r.status == 500
    assert r.header("X-Toll-Amount") == "0", r.headers
    r = get(ngx, k, "/free/x?status=503")
    assert r.status == 503
    assert r.header("X-Toll-Amount") == "0", r.headers
    # the two failed calls used no free call: four more are free
    for i in range(4):
        r = get(ngx, k, "/free/x")
        assert r.status == 200
        check_billing(r, "0", free="true", remaining=3 - i)
    r = get(ngx, k, "/free/x")
    check_billing(r, "0.05", free="false", remaining=0)
    assert free_claimed(rc, "free-err", "free") == 5
    wait_usage(rc, {("free-err", "free"): {
        "calls": 8, "errors": 2, "paid_calls": 1, "amount_micros": 50000}})
    ngx.stop()
    u = project(usage(rc))[("free-err", "free")]
    assert (u["calls"], u["errors"], u["paid_calls"], u["amount_micros"],
            u["free_calls"]) == (8, 2, 1, 50000, 5), u
    assert free_claimed(rc, "free-err", "free") == 5


def test_free_tier_redis_down_without_lease(start_nginx, meter_upstream,
                                            redis_server):
    ngx = start(start_nginx, meter_upstream, FREE, redis_timeout="300ms")
    k = make_key(redis_server, owner="free-down")
    warm(ngx, k)       # cached: no Redis needed to authenticate
    before = meter_upstream.total

    redis_server.kill()
    for _ in range(3):
        # default policy: closed, 503 store_unavailable, no billing headers
        r = get(ngx, k, "/free/x")
        check_problem(r, 503, "store_unavailable")
        assert any_billing(r) == [], r.headers
        # toll_free_tier_fallback paid: the call is charged its price
        r = get(ngx, k, "/freepaid/x")
        assert r.status == 200, (r, r.body)
        check_billing(r, "0.05", free="false", remaining=ANY)
        # a service without a free tier needs no lease
        r = get(ngx, k, "/svc-a/x")
        check_billing(r, "0.05")
    assert meter_upstream.total - before == 6

    redis_server.start()
    k.write(redis_server.client)
    # the new Redis holds what was counted while it was away; the 503s
    # are not in it
    final_usage(ngx, redis_server.client, {
        ("free-down", "freepaid"): expect(3, "0.05", "acme"),
        ("free-down", "svc-a"): expect(3, "0.05", "acme")})


# ------------------------------------------------------------ toll_usage

USAGE = (loc("/svc-a/", "toll_service svc-a provider=acme price=0.05 "
             "free_calls=2;")
         + loc("/svc-b/", "toll_service svc-b provider=globex "
               "price=1.234567;")
         + """
        location = /usage/me {
            toll on;
            toll_usage;
        }
""")


def usage_me(ngx, key, method="GET"):
    r = get(ngx, key, "/usage/me", method=method)
    return r, (json.loads(r.body) if r.status == 200 else None)


def test_usage_me(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream, USAGE)
    alice = make_key(redis_server, owner="alice")
    bob = make_key(redis_server, owner="bob")
    for _ in range(5):
        assert get(ngx, alice, "/svc-a/x").status == 200
    for _ in range(3):
        assert get(ngx, alice, "/svc-b/x").status == 200
    assert get(ngx, bob, "/svc-a/x").status == 200
    wait_usage(redis_server.client,
               {("alice", "svc-a"): {"calls": 5},
                ("alice", "svc-b"): {"calls": 3},
                ("bob", "svc-a"): {"calls": 1}})

    r, body = usage_me(ngx, alice)
    assert r.status == 200, (r, r.body)
    assert r.header("Content-Type") == "application/json"
    assert body["buyer"] == "alice"
    services = {s["service"]: s for s in body["services"]}
    assert services["svc-a"] == {
        "service": "svc-a", "provider": "acme", "calls": 5,
        "free_calls": 2, "free_remaining": 0, "paid_calls": 3,
        "errors": 0, "amount": "0.15", "units": 0}, services
    assert services["svc-b"]["amount"] == "3.703701", services
    # totals in decimal strings, summed on integers: 0.15 + 3.703701
    assert body["totals"] == {"calls": 8, "free_calls": 2, "paid_calls": 6,
                              "errors": 0, "amount": "3.853701"}, body

    # bob sees his own usage only, with his free call left
    r, body = usage_me(ngx, bob)
    assert [s["service"] for s in body["services"]] == ["svc-a"], body
    assert body["services"][0]["free_remaining"] == 1, body
    assert body["totals"]["amount"] == "0", body


def test_usage_me_refusals(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream, USAGE)
    alice = make_key(redis_server, owner="alice")
    r, _ = usage_me(ngx, None)
    check_problem(r, 401, "unauthorized")
    r, _ = usage_me(ngx, alice, method="POST")
    assert r.status == 405, r
    # a fresh buyer: no usage yet, an empty answer, not an error
    r, body = usage_me(ngx, alice)
    assert r.status == 200 and body["services"] == [], body
    assert body["totals"]["amount"] == "0", body


@pytest.mark.allow_log(r"redis")
def test_usage_me_store_down(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream, USAGE)
    alice = make_key(redis_server, owner="alice")
    warm(ngx, alice)
    redis_server.kill()
    r, _ = usage_me(ngx, alice)
    check_problem(r, 503, "store_unavailable")


def test_client_copies_of_a_custom_prefix_do_not_reach_upstream(
        start_nginx, upstream, redis_server):
    """With toll_billing_header_prefix X-ACF-, a client's X-ACF-* request
    headers are the gate's namespace, as X-Toll-* are: removed before the
    upstream, in any case and with underscores."""
    locations = """
        location /acf/ {
            toll on;
            toll_service s provider=p price=1;
            toll_billing_header_prefix X-ACF-;
            %s
        }
""" % PROXY
    ngx = start_nginx(locations=locations,
                      http_extra="underscores_in_headers on;")
    k = make_key(redis_server, owner="alice")
    for _ in range(2):
        r = client.request(ngx.port, path="/acf/x", headers=[
            k.bearer(), ("X-ACF-Amount", "999"), ("x-acf-free-tier", "true"),
            ("X_ACF_Usage_Id", "forged"), ("X-ACFX", "kept")])
        assert r.status == 200, (r, r.body)
        assert r.header("X-ACF-Amount") == "1"
        req = upstream.last
        names = [n.lower() for n, _ in req["headers"]]
        assert not [n for n in names
                    if n.replace("_", "-").startswith("x-acf-")], names
        assert header_values(req, "X-ACFX") == ["kept"]


def test_usage_needs_toll_on(nginx_t):
    rc, out, _ = nginx_t("""
    toll_redis 127.0.0.1:6379;
    server {
        listen 127.0.0.1:1;
        location = /usage/me { toll_usage; }
    }""")
    assert rc != 0 and '"toll_usage" needs "toll on"' in out, out
