"""Spend caps in the toll_usage answer (issue 15 item 6;
docs/directives.md "toll_usage", docs/metering.md "Spend caps").

For the caller's buyer and key, each cap that applies is listed with
what its period counts as used, what remains, the period's start and its
end.  The nginx that answers reads its own writes: what it leased of a
cap and has not spent is not counted as used, so a call shows at once,
exactly; what another nginx leased and did not spend shows as used
until it goes back.
"""

import calendar
import datetime
import os
import time

import pytest

from helpers import client
from helpers.caps import cap_key, period_used, set_cap, set_key_cap
from helpers.keys import make_key
from helpers.meter import meter_http, meter_upstream, micros, proxy_to, \
    upstream_block
from helpers.procs import wait_for

assert meter_upstream  # a fixture, used by name

PRICE = "0.05"
PROXY_M = proxy_to("meterapi")
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

LOCATIONS = """
        location = /usage/me {
            toll on;
            toll_usage;
        }
        location /paid/ {
            toll on;
            toll_service paid provider=acme price=0.05;
            %(proxy)s
        }
        location /euro/ {
            toll on;
            toll_service euro provider=acme price=0.5 currency=EUR;
            %(proxy)s
        }
""" % {"proxy": PROXY_M}


@pytest.fixture(autouse=True)
def others_capped(redis_server):
    """Another buyer's cap before any nginx starts: with no cap set
    anywhere, a node skips caps until it next reads the generation."""
    set_cap(redis_server.client, "~others", daily=micros("1"))


def start(start_nginx, up, extra="", **kw):
    return start_nginx(http_extra=meter_http() + extra + upstream_block(
        "meterapi", up.port, keepalive=64), locations=LOCATIONS, **kw)


def call(ngx, key, path="/paid/x"):
    return client.request(ngx.port, path=path, headers=[key.bearer()])


def usage(ngx, key):
    r = client.request(ngx.port, path="/usage/me", headers=[key.bearer()])
    assert r.status == 200, (r, r.body)
    assert r.header("Content-Type") == "application/json"
    return r.json()


def caps_of(u):
    """{(scope, currency, period): cap}"""
    return {(c["scope"], c["currency"], c["period"]): c for c in u["caps"]}


def iso(day):
    return day.strftime("%Y-%m-%dT00:00:00Z")


def today_utc(now=None):
    now = time.time() if now is None else now
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()


def month_of(day, anchor=1):
    """The month that holds day, starting on the anchor day."""
    y, m = day.year, day.month
    if day.day < anchor:
        m -= 1
        if m == 0:
            y, m = y - 1, 12
    start = datetime.date(y, m, anchor)
    m += 1
    if m == 13:
        y, m = y + 1, 1
    return start, datetime.date(y, m, anchor)


def assert_cap(c, cap, used, start, end, key_id=None):
    assert (c["cap"], micros(c["used"]), micros(c["remaining"])) == \
        (cap, used, max(micros(cap) - used, 0)), c
    assert (c["start"], c["end"]) == (iso(start), iso(end)), c
    assert c.get("key_id") == key_id, c
    want = {"scope", "currency", "period", "cap", "used", "remaining",
            "start", "end"} | ({"key_id"} if key_id else set())
    assert set(c) == want, c


# ------------------------------------------------------ unhappy paths

def test_no_caps_lists_none(start_nginx, meter_upstream, redis_server):
    """A buyer with no cap has an empty list, as with balances; another
    buyer's caps, and another key's, are not the caller's."""
    ngx = start(start_nginx, meter_upstream)
    rc = redis_server.client
    k = make_key(redis_server, owner="nocaps")
    assert call(ngx, k).status == 200
    u = usage(ngx, k)
    assert u["caps"] == [] and u["balances"] == [], u
    assert list(u)[-1] == "caps", u

    other = make_key(redis_server, owner="nocaps")
    set_key_cap(rc, "nocaps", other.key_id, daily=micros("1"))
    assert usage(ngx, k)["caps"] == []
    assert len(usage(ngx, other)["caps"]) == 1


def test_a_cap_that_is_not_a_number_is_500(start_nginx, meter_upstream,
                                           redis_server):
    ngx = start(start_nginx, meter_upstream)
    rc = redis_server.client
    k = make_key(redis_server, owner="badcap")
    for bad in ("1.5", "-3", "", "99999999999999999999"):
        rc.hset(cap_key("badcap"), "USD:daily", bad)
        r = client.request(ngx.port, path="/usage/me", headers=[k.bearer()])
        assert r.status == 500, (bad, r)
    assert "a spend cap of \"badcap\" does not read as one" in \
        ngx.error_log_text()
    # a field toll does not write is not a cap
    rc.delete(cap_key("badcap"))
    rc.hset(cap_key("badcap"), "USD:weekly", "5")
    rc.hset(cap_key("badcap"), "anchor", "3")
    rc.hset(cap_key("badcap"), "key:", "5")
    assert usage(ngx, k)["caps"] == []


def test_names_from_redis_are_escaped(start_nginx, meter_upstream,
                                      redis_server):
    """A currency is whatever Redis holds: the answer stays valid JSON."""
    ngx = start(start_nginx, meter_upstream)
    rc = redis_server.client
    k = make_key(redis_server, owner="odd")
    rc.hset(cap_key("odd"), b'U"S\\\n\xff:daily', b"5")
    c = usage(ngx, k)["caps"]
    assert [x["currency"] for x in c] == ['U"S\\\n\ufffd'], c
    assert c[0]["cap"] == "0.000005", c


def test_redis_away_is_503(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream)
    k = make_key(redis_server, owner="away")
    set_cap(redis_server.client, "away", daily=micros("1"))
    assert usage(ngx, k)["caps"]
    redis_server.kill()
    r = client.request(ngx.port, path="/usage/me", headers=[k.bearer()])
    assert r.status == 503, r
    assert r.json()["code"] == "store_unavailable"


# ------------------------------------------------------- what it shows

def test_caps_read_their_own_writes(start_nginx, meter_upstream,
                                    redis_server):
    """Each call shows in every cap at once and exactly, whichever of the
    two workers served it, though Redis counts the node's whole lease as
    used; the buyer's caps count all its keys, a key's cap its own."""
    ngx = start(start_nginx, meter_upstream)
    rc = redis_server.client
    k1 = make_key(redis_server, owner="reads")
    k2 = make_key(redis_server, owner="reads")
    set_cap(rc, "reads", daily=micros("2"), monthly=micros("30"))
    set_key_cap(rc, "reads", k1.key_id, daily=micros("0.5"),
                monthly=micros("4"))
    set_cap(rc, "reads", daily=micros("7"), currency="EUR")
    day = today_utc()
    ms, me = month_of(day)
    tomorrow = day + datetime.timedelta(days=1)

    u = usage(ngx, k1)
    c = caps_of(u)
    assert list(c) == [("buyer", "EUR", "daily"), ("buyer", "USD", "daily"),
                       ("buyer", "USD", "monthly"), ("key", "USD", "daily"),
                       ("key", "USD", "monthly")], u
    assert_cap(c[("buyer", "EUR", "daily")], "7", 0, day, tomorrow)
    assert_cap(c[("key", "USD", "monthly")], "4", 0, ms, me, k1.key_id)

    n1 = n2 = 0
    for i in range(12):
        key = k1 if i % 3 else k2
        assert call(ngx, key).status == 200
        if key is k1:
            n1 += 1
        else:
            n2 += 1
        p = micros(PRICE)
        c = caps_of(usage(ngx, key))
        assert_cap(c[("buyer", "USD", "daily")], "2", (n1 + n2) * p,
                   day, tomorrow)
        assert_cap(c[("buyer", "USD", "monthly")], "30", (n1 + n2) * p,
                   ms, me)
        if key is k1:
            assert_cap(c[("key", "USD", "daily")], "0.5", n1 * p, day,
                       tomorrow, k1.key_id)
            assert_cap(c[("key", "USD", "monthly")], "4", n1 * p, ms, me,
                       k1.key_id)
        else:
            assert ("key", "USD", "daily") not in c
    # Redis counts the node's leases too: the answer is not a copy of it
    assert period_used(rc, "reads") > (n1 + n2) * micros(PRICE)

    # spent to the key's daily cap: 0.5 = 10 calls; the 11th is refused
    while n1 < 10:
        assert call(ngx, k1).status == 200
        n1 += 1
    assert call(ngx, k1).status == 402
    c = caps_of(usage(ngx, k1))
    assert_cap(c[("key", "USD", "daily")], "0.5", micros("0.5"), day,
               tomorrow, k1.key_id)
    assert c[("key", "USD", "daily")]["remaining"] == "0"
    assert_cap(c[("buyer", "USD", "daily")], "2",
               (n1 + n2) * micros(PRICE), day, tomorrow)


def test_a_cap_lowered_below_use_remains_0(start_nginx, meter_upstream,
                                           redis_server):
    ngx = start(start_nginx, meter_upstream)
    rc = redis_server.client
    k = make_key(redis_server, owner="lowered")
    set_cap(rc, "lowered", monthly=micros("5"), anchor=15)
    for _ in range(4):
        assert call(ngx, k).status == 200
    set_cap(rc, "lowered", monthly=micros("0.1"))
    c = caps_of(usage(ngx, k))[("buyer", "USD", "monthly")]
    ms, me = month_of(today_utc(), anchor=15)
    assert_cap(c, "0.1", 4 * micros(PRICE), ms, me)
    assert c["remaining"] == "0"


def test_another_nodes_unspent_lease_shows_until_it_goes_back(
        start_nginx, meter_upstream, redis_server):
    """Node A leases 10 calls' worth and spends one: A answers 1 call
    used; B answers A's whole lease used until A gives it back
    (toll_prepaid_idle), then 1 call."""
    idle = "    toll_prepaid_idle 1s;\n"
    a = start(start_nginx, meter_upstream, extra=idle)
    b = start(start_nginx, meter_upstream, extra=idle)
    rc = redis_server.client
    k = make_key(redis_server, owner="twonodes")
    set_cap(rc, "twonodes", daily=micros("10"))
    assert call(a, k).status == 200
    one = micros(PRICE)

    def used(ngx):
        return micros(caps_of(usage(ngx, k))[("buyer", "USD",
                                                "daily")]["used"])
    assert used(a) == one
    assert used(b) == 10 * one
    wait_for(lambda: used(b) == one, 10, interval=0.2,
             what="node A's idle lease to go back")
    assert used(a) == one


def faked(monkeypatch, when):
    """As t/test_caps.py: nginx started from here on runs on a clock that
    starts at when (UTC); Redis keeps the real one."""
    if not os.path.exists(FAKETIME_LIB):
        pytest.skip("libfaketime is not installed (apt-get install "
                    "faketime)")
    if os.environ.get("TOLL_PRELOAD"):
        pytest.skip("libfaketime cannot be preloaded with the sanitizer "
                    "runtimes")
    monkeypatch.setenv("LD_PRELOAD", FAKETIME_LIB)
    monkeypatch.setenv("FAKETIME", "@" + when.strftime("%Y-%m-%d %H:%M:%S"))
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("DONT_FAKE_MONOTONIC", "1")
    monkeypatch.setenv("FAKETIME_DONT_RESET", "1")
    return calendar.timegm(when.timetuple())


def test_day_and_month_change(start_nginx, meter_upstream, redis_server,
                              monkeypatch):
    """At midnight the day's cap starts again from 0 with its new period;
    the month (anchored on the 10th) goes on counting across it, then
    starts again too, as the next day is the anchor."""
    when = datetime.datetime(2026, 3, 9, 23, 59, 56)
    rc = redis_server.client
    k = make_key(redis_server, owner="midnight")
    set_cap(rc, "midnight", daily=micros("1"), monthly=micros("3"),
            anchor=10)
    set_key_cap(rc, "midnight", k.key_id, daily=micros("2"))
    faked(monkeypatch, when)
    ngx = start(start_nginx, meter_upstream)
    monkeypatch.delenv("LD_PRELOAD")
    d0, d1, d2 = (datetime.date(2026, 3, 9), datetime.date(2026, 3, 10),
                  datetime.date(2026, 3, 11))
    m0, m1, m2 = (datetime.date(2026, 2, 10), datetime.date(2026, 3, 10),
                  datetime.date(2026, 4, 10))
    p = micros(PRICE)
    for _ in range(3):
        assert call(ngx, k).status == 200
    c = caps_of(usage(ngx, k))
    if c[("buyer", "USD", "daily")]["start"] != iso(d0):
        pytest.skip("nginx started too late to call before midnight")
    assert_cap(c[("buyer", "USD", "daily")], "1", 3 * p, d0, d1)
    assert_cap(c[("buyer", "USD", "monthly")], "3", 3 * p, m0, m1)
    assert_cap(c[("key", "USD", "daily")], "2", 3 * p, d0, d1, k.key_id)

    wait_for(lambda: caps_of(usage(ngx, k))[("buyer", "USD", "daily")]
             ["start"] == iso(d1), 10, interval=0.2, what="midnight")
    c = caps_of(usage(ngx, k))
    assert_cap(c[("buyer", "USD", "daily")], "1", 0, d1, d2)
    assert_cap(c[("buyer", "USD", "monthly")], "3", 0, m1, m2)
    assert_cap(c[("key", "USD", "daily")], "2", 0, d1, d2, k.key_id)
    assert call(ngx, k).status == 200
    c = caps_of(usage(ngx, k))
    assert_cap(c[("buyer", "USD", "daily")], "1", p, d1, d2)
    assert_cap(c[("buyer", "USD", "monthly")], "3", p, m1, m2)
