"""Pricing follows the request across internal redirects (issue 13).

A request is authenticated, limited and charged exactly once, and
charged by the location that sends it upstream: try_files, index,
error_page (also after an upstream answered and proxy_intercept_errors
took its answer), named locations, X-Accel-Redirect from an upstream and
rewrite ... last.  `toll on` is set at server level, as in the usual PHP
front controller layout; the locations that sell carry `toll_service`.

Every case sends two calls (state that leaks from one call to the next
shows) and checks the billing headers, the $toll_* variables in the usage
log, the counting upstream's hits and, after a graceful stop, the meter's
counts in Redis: exactly what the calls were charged, nothing else.

The first hop of the X-Accel-Redirect and intercept cases is a second
server of the same nginx (`helper`), so that the counting upstream sees
only the hop that is charged.
"""

import pytest

from helpers import client
from helpers.keys import make_key
from helpers.meter import (INT_FIELDS, check_billing, meter_http,
                           meter_log, meter_upstream, micros, project,
                           proxy_to, upstream_block, usage)
from helpers.procs import free_port, wait_for
from test_metrics import parse_text, value

assert meter_upstream  # a fixture, used by name

PROXY_M = proxy_to("meterapi")

PHP = "toll_service php provider=acme price=0.05 free_calls=0;"
WEB = "toll_service web provider=acme price=0.02 free_calls=1;"
PLAIN = "toll_service plain provider=acme price=0.03;"


def helper_server(port):
    """The first upstream of the multi-hop cases: a 404 for intercepts,
    an X-Accel-Redirect to /index.php."""
    return """
    server {
        listen 127.0.0.1:%d;
        location /nf/ {
            return 404 "not here\\n";
        }
        location /accel/ {
            add_header X-Accel-Redirect /index.php;
            return 200 "see /index.php\\n";
        }
    }
""" % port


LOCATIONS = """
        location /warm/ {
            %(proxy)s
        }
        location = /index.php {
            %(php)s
            %(proxy)s
        }
        location @php {
            %(php)s
            %(proxy)s
        }
        location @backend {
            %(proxy)s
        }

        location /tf/ {
            try_files $uri /index.php;
        }
        location /ix/ {
            index /index.php;
        }
        location /ep/ {
            error_page 404 = /index.php;
        }
        location /ic/ {
            proxy_pass http://helper/nf/;
            proxy_intercept_errors on;
            error_page 404 = /index.php;
        }
        location /nl/ {
            try_files $uri @php;
        }
        location /en/ {
            error_page 404 = @php;
        }
        location /xa/ {
            proxy_pass http://helper/accel/;
        }
        location /rw/ {
            rewrite ^ /index.php last;
        }

        location /ic2/ {
            %(web)s
            proxy_pass http://helper/nf/;
            proxy_intercept_errors on;
            error_page 404 = /index.php;
        }
        location /xa2/ {
            %(web)s
            proxy_pass http://helper/accel/;
        }
        location /tf2/ {
            %(web)s
            try_files $uri /index.php;
        }
        location /web/ {
            %(web)s
            %(proxy)s
        }

        location /pu/ {
            %(plain)s
            try_files $uri @backend;
        }
        location /pi/ {
            %(plain)s
            proxy_pass http://helper/nf/;
            proxy_intercept_errors on;
            error_page 404 = /plain-ok;
        }
        location = /plain-ok {
            toll off;
            return 200 "ok\\n";
        }

        location /tfw/ {
            try_files $uri /web/from-tfw;
        }
        location /lo/ {
            toll_limit off;
            try_files $uri /index.php;
        }
        location = /ping {
            return 200 "pong\\n";
        }
        location = /toll/metrics {
            toll off;
            toll_metrics;
        }
""" % {"proxy": PROXY_M, "php": PHP, "web": WEB, "plain": PLAIN}


def start(start_nginx, up, http_extra=""):
    hport = free_port()
    return start_nginx(
        http_extra=(meter_http() + upstream_block("meterapi", up.port)
                    + upstream_block("helper", hport) + helper_server(hport)
                    + http_extra),
        server_extra="        toll on;", locations=LOCATIONS)


def get(ngx, key, path):
    t = client.tag()
    r = client.request(ngx.port, path=path,
                       headers=[key.bearer(), ("X-Test-Tag", t)])
    r.tag = t
    return r


def counted(rc):
    """The meter in Redis, records that count anything: a call counted at
    one price and moved to another may leave its first service's fields
    behind, all at zero."""
    out = {}
    # prepaid_micros, units: these locations are neither prepaid
    # (test_prepaid.py) nor priced by units (test_units.py)
    fields = (set(INT_FIELDS) - {"latency_ms", "prepaid_micros", "units"}
              | {"provider"})
    for k, r in project(usage(rc), fields).items():
        if any(r[f] for f in INT_FIELDS if f in r):
            out[k] = r
    return out


def final_counted(ngx, rc, expected):
    """Waits for the flushes, stops nginx gracefully (which flushes the
    rest) and checks the final state: exactly `expected`."""
    try:
        wait_for(lambda: counted(rc) == expected, 20, interval=0.05,
                 what="usage in Redis")
    except TimeoutError:
        pass
    ngx.stop()
    got = counted(rc)
    assert got == expected, "in Redis:\n%r\nexpected\n%r" % (got, expected)


def rec(calls, price, provider="acme", free=0):
    paid = calls - free
    return {"calls": calls, "free_calls": free, "paid_calls": paid,
            "amount_micros": paid * micros(price), "errors": 0,
            "provider": provider}


def log_of(ngx, tag):
    """The usage log line of the call tagged `tag` (the helper server's
    line of the same call has no buyer)."""
    def lines():
        return [rec for rec in meter_log(ngx)
                if rec.get("tag") == tag and rec.get("buyer") != "-"]

    # nginx writes the line after the answer has left
    wait_for(lambda: lines(), 5, interval=0.02, what="the usage log line")
    got = lines()
    assert len(got) == 1, got
    return got[0]


# (id, path, service charged, price, upstream path segment the counting
#  upstream sees)
ONE_PRICED = [
    ("try_files", "/tf/some/page", "php", "0.05", "index.php"),
    ("index", "/ix/", "php", "0.05", "index.php"),
    ("error_page", "/ep/missing", "php", "0.05", "index.php"),
    ("error_page_after_intercept", "/ic/x", "php", "0.05", "index.php"),
    ("named_location", "/nl/page", "php", "0.05", "nl"),
    ("error_page_named", "/en/missing", "php", "0.05", "en"),
    ("x_accel_redirect", "/xa/x", "php", "0.05", "index.php"),
    ("rewrite_last", "/rw/anything", "php", "0.05", "index.php"),
    ("direct", "/index.php", "php", "0.05", "index.php"),
]


def call_twice(ngx, up, key, path, amount):
    before = up.total
    tags = []
    for i in range(2):
        r = get(ngx, key, path)
        assert r.status == 200, (path, r, r.body)
        assert r.body == b'{"ok":true}', (path, r.body)
        check_billing(r, amount)
        tags.append(r.tag)
        # the counting upstream got this call once
        up.wait_total(before + i + 1)
    return tags


@pytest.mark.parametrize("case", ONE_PRICED, ids=[c[0] for c in ONE_PRICED])
def test_redirect_into_priced_location(start_nginx, meter_upstream,
                                       redis_server, case):
    _, path, service, price, segment = case
    ngx = start(start_nginx, meter_upstream)
    buyer = "b-" + case[0]
    key = make_key(redis_server, owner=buyer)

    tags = call_twice(ngx, meter_upstream, key, path, price)

    assert meter_upstream.counts() == {(buyer, segment): 2}, \
        meter_upstream.counts()

    for t in tags:
        line = log_of(ngx, t)
        assert (line["service"], line["provider"], line["price"],
                line["amount"], line["free"]) == (service, "acme", price,
                                                  price, "false"), line

    final_counted(ngx, redis_server.client,
                  {(buyer, service): rec(2, price)})
    assert meter_upstream.total == 2


# a request sent upstream by two priced locations: the last one charges,
# the first one's admission (and its free call) is given back

TWO_PRICED = [
    ("error_page_after_intercept", "/ic2/x"),
    ("x_accel_redirect", "/xa2/x"),
    ("try_files", "/tf2/page"),
]


@pytest.mark.parametrize("case", TWO_PRICED, ids=[c[0] for c in TWO_PRICED])
def test_redirect_between_priced_locations(start_nginx, meter_upstream,
                                           redis_server, case):
    _, path = case
    ngx = start(start_nginx, meter_upstream)
    buyer = "b2-" + case[0]
    key = make_key(redis_server, owner=buyer)

    tags = call_twice(ngx, meter_upstream, key, path, "0.05")

    for t in tags:
        line = log_of(ngx, t)
        assert (line["service"], line["price"], line["amount"],
                line["free"]) == ("php", "0.05", "0.05", "false"), line

    # web's one free call was taken back both times: still there
    r = get(ngx, key, "/web/x")
    assert r.status == 200, (r, r.body)
    check_billing(r, "0", free="true", remaining=0)
    r = get(ngx, key, "/web/x")
    check_billing(r, "0.02", free="false", remaining=0)

    assert meter_upstream.counts() == {(buyer, "index.php"): 2,
                                       (buyer, "web"): 2}, \
        meter_upstream.counts()

    final_counted(ngx, redis_server.client, {
        (buyer, "php"): rec(2, "0.05"),
        (buyer, "web"): rec(2, "0.02", free=1)})


# a priced location whose call goes upstream from an unpriced one, or
# whose upstream's answer is replaced by an unpriced page: its price stays

def test_priced_location_redirects_to_unpriced(start_nginx, meter_upstream,
                                               redis_server):
    ngx = start(start_nginx, meter_upstream)
    buyer = "b-pu"
    key = make_key(redis_server, owner=buyer)

    tags = call_twice(ngx, meter_upstream, key, "/pu/page", "0.03")

    for t in tags:
        line = log_of(ngx, t)
        assert (line["service"], line["amount"]) == ("plain", "0.03"), line

    assert meter_upstream.counts() == {(buyer, "pu"): 2}

    final_counted(ngx, redis_server.client,
                  {(buyer, "plain"): rec(2, "0.03")})


def test_priced_upstream_answer_replaced_by_unpriced_page(
        start_nginx, meter_upstream, redis_server):
    """The upstream answered (404, intercepted); the page shown instead is
    unpriced and not proxied: the call is the priced location's."""
    ngx = start(start_nginx, meter_upstream)
    buyer = "b-pi"
    key = make_key(redis_server, owner=buyer)

    for _ in range(2):
        r = get(ngx, key, "/pi/x")
        assert r.status == 200 and r.body == b"ok\n", (r, r.body)
        check_billing(r, "0.03")
        line = log_of(ngx, r.tag)
        assert (line["service"], line["amount"]) == ("plain", "0.03"), line

    final_counted(ngx, redis_server.client,
                  {(buyer, "plain"): rec(2, "0.03")})
    assert meter_upstream.total == 0


def test_redirect_into_free_tier(start_nginx, meter_upstream, redis_server):
    """The free tier of the location redirected to: its lease is asked
    for from there (the request parks on Redis after the redirect), the
    first call is free, the next paid; the free call stays taken."""
    ngx = start(start_nginx, meter_upstream)
    buyer = "b-tfw"
    key = make_key(redis_server, owner=buyer)

    r = get(ngx, key, "/tfw/page")
    assert r.status == 200 and r.body == b'{"ok":true}', (r, r.body)
    check_billing(r, "0", free="true", remaining=0)
    line = log_of(ngx, r.tag)
    assert (line["service"], line["amount"], line["free"]) == (
        "web", "0", "true"), line
    r = get(ngx, key, "/tfw/page")
    check_billing(r, "0.02", free="false", remaining=0)

    assert meter_upstream.counts() == {(buyer, "web"): 2}
    final_counted(ngx, redis_server.client,
                  {(buyer, "web"): rec(2, "0.02", free=1)})
    assert int(redis_server.client.hget("toll:free:{%s}" % buyer,
                                        "web")) == 1


def test_limits_run_once_across_redirects(start_nginx, meter_upstream,
                                          redis_server):
    """A window of 2 a day: two redirected calls pass and count once each
    (the day's remainder goes 1, 0), the third is refused, also when the
    location that first gated it has toll_limit off."""
    ngx = start(start_nginx, meter_upstream,
                http_extra="    toll_plan two rate=2r/d;\n")
    key = make_key(redis_server, owner="b-lim", plan="two")

    r = get(ngx, key, "/tf/a")
    assert r.status == 200, (r, r.body)
    assert r.header("X-RateLimit-Remaining") == "1", r.headers
    r = get(ngx, key, "/lo/a")
    assert r.status == 200, (r, r.body)
    assert r.header("X-RateLimit-Remaining") == "0", r.headers
    r = get(ngx, key, "/lo/a")
    assert r.status == 429, (r, r.body)
    r = get(ngx, key, "/xa/a")
    assert r.status == 429, (r, r.body)

    final_counted(ngx, redis_server.client,
                  {("b-lim", "php"): rec(2, "0.05")})
    assert meter_upstream.total == 2


def test_metrics_follow_the_price(start_nginx, meter_upstream, redis_server):
    """The operator's counters name the service that sold the call: the
    decision, the metered call and the amount go to "php", nothing to the
    location the request entered or to the price taken back."""
    ngx = start(start_nginx, meter_upstream)
    key = make_key(redis_server, owner="b-metrics")
    for path in ("/tf/a", "/ic2/x", "/xa2/x"):
        r = get(ngx, key, path)
        assert r.status == 200, (path, r, r.body)
        check_billing(r, "0.05")

    def fams():
        r = client.request(ngx.port, path="/toll/metrics")
        assert r.status == 200, (r, r.body)
        return parse_text(r.body.decode())

    wait_for(lambda: value(fams(), "toll_metered_calls_total",
                           service="php", tier="paid") == 3,
             5, interval=0.05, what="the metered calls of php")
    f = fams()
    assert value(f, "toll_requests_total", service="php",
                 decision="passed") == 3
    assert value(f, "toll_billed_micros_total", service="php",
                 currency="USD") == 3 * 50000
    for tier in ("free", "paid"):
        assert value(f, "toll_metered_calls_total", service="web",
                     tier=tier) == 0
    assert value(f, "toll_requests_total", service="web",
                 decision="passed") == 0
    assert value(f, "toll_billed_micros_total", service="web",
                 currency="USD") == 0
