"""Prepaid balances at the gate (issue 15; docs/metering.md "Prepaid
balances"): a call that would be paid passes only while the buyer's
balance covers its price, exactly, across nginx instances and workers.

Balances are credited with the real script (lua/balance.lua) as tollctl
sends it; the upstream counts what it received per buyer, and after
every test that moves money the balance hash must hold credits - debits
= available + held + spent, with spent = what the upstream received x
price, and nothing overdrawn.
"""

import concurrent.futures
import json
import time

import pytest

from helpers import client
from helpers.balance import balance, credit, invariant
from helpers.keys import make_key
from helpers.limits import Conn
from helpers.meter import (meter_http, meter_upstream, micros, proxy_to,
                           upstream_block)
from helpers.procs import wait_for

assert meter_upstream  # a fixture, used by name

PRICE = "0.05"
PROXY_M = proxy_to("meterapi")

LOCATIONS = """
        location = /toll/metrics {
            toll_metrics;
        }
        location /warm/ {
            toll on;
            %(proxy)s
        }
        location /paid/ {
            toll on;
            toll_prepaid on;
            toll_service paid provider=acme price=0.05;
            %(proxy)s
        }
        location /freep/ {
            toll on;
            toll_prepaid on;
            toll_service freep provider=acme price=0.05 free_calls=2;
            %(proxy)s
        }
        location /postpaid/ {
            toll on;
            toll_service postpaid provider=acme price=0.05;
            %(proxy)s
        }
        location /openpaid/ {
            toll on;
            toll_prepaid on;
            toll_prepaid_fallback open;
            toll_service openpaid provider=acme price=0.05;
            %(proxy)s
        }
""" % {"proxy": PROXY_M}


def start(start_nginx, up, extra="", **kw):
    return start_nginx(http_extra=meter_http() + extra + upstream_block(
        "meterapi", up.port, keepalive=64), locations=LOCATIONS, **kw)


def call(ngx, key, path="/paid/x"):
    return client.request(ngx.port, path=path, headers=[key.bearer()])


def settled(rc, buyer, spent, timeout=15):
    """Waits until every node gave back its idle lease and the meter's
    flushes moved what was charged to spent: held 0, spent as given."""
    def done():
        b = balance(rc, buyer)
        return b.get("held", 0) == 0 and b.get("spent", 0) == spent
    try:
        wait_for(done, timeout, interval=0.1, what="the balance to settle")
    finally:
        b = invariant(rc, buyer)
    assert b.get("available", 0) >= 0, b
    return b


# ---------------------------------------------------------------- 402

def test_no_balance_is_402(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream)
    k = make_key(redis_server, owner="nobal")
    r = call(ngx, k)
    assert r.status == 402, (r, r.body)
    assert r.header("Content-Type") == "application/problem+json"
    body = r.json()
    assert body["code"] == "payment_required", body
    assert body["status"] == 402
    assert body["price"] == PRICE and body["currency"] == "USD", body
    assert body["balance"] == "0", body
    # a refusal carries no billing headers and is never metered
    assert r.header("X-Toll-Amount") is None
    assert meter_upstream.total == 0
    # the same buyer is not refused where the location is not prepaid
    assert call(ngx, k, "/postpaid/x").status == 200


def test_balance_pays_until_it_is_spent(start_nginx, meter_upstream,
                                        redis_server):
    ngx = start(start_nginx, meter_upstream)
    rc = redis_server.client
    k = make_key(redis_server, owner="payer")
    assert credit(rc, "payer", micros("0.12"))[0] == 1
    got = [call(ngx, k) for _ in range(4)]
    assert [r.status for r in got] == [200, 200, 402, 402], got
    assert got[0].header("X-Toll-Amount") == PRICE
    # what is left, as the node knows it
    assert [r.header("X-Toll-Balance") for r in got[:2]] == ["0.07", "0.02"]
    assert got[3].json()["balance"] == "0.02", got[3].body
    assert meter_upstream.counts() == {("payer", "paid"): 2}
    settled(rc, "payer", micros("0.10"))


def test_free_tier_calls_do_not_touch_the_balance(start_nginx,
                                                  meter_upstream,
                                                  redis_server):
    ngx = start(start_nginx, meter_upstream)
    k = make_key(redis_server, owner="freeb")
    got = [call(ngx, k, "/freep/x").status for _ in range(3)]
    assert got == [200, 200, 402], got
    # the third asked Redis for a lease (and was seen): no money moved
    b = balance(redis_server.client, "freeb")
    assert {f: v for f, v in b.items() if not f.startswith("seen:")} \
        == {}, b


def test_uncharged_calls_give_their_hold_back(start_nginx, meter_upstream,
                                              redis_server):
    """On one keep-alive connection, so that each call has ended (its log
    phase ran) before the next: a call in flight holds its price."""
    ngx = start(start_nginx, meter_upstream)
    rc = redis_server.client
    k = make_key(redis_server, owner="errs")
    credit(rc, "errs", micros("0.05"))
    conn = Conn(ngx.port)
    # an upstream 5xx is not charged: the one call's hold comes back
    for _ in range(3):
        r = conn.get("/paid/x?status=503", [k.bearer()])
        assert r.status == 503 and r.header("X-Toll-Amount") == "0", r
        assert r.header("X-Toll-Balance") == "0.05", r
    assert conn.get("/paid/x", [k.bearer()]).status == 200
    assert conn.get("/paid/x", [k.bearer()]).status == 402
    conn.close()
    settled(rc, "errs", micros("0.05"))


# ---------------------------------------------------- across nodes

def test_exact_across_three_nodes(start_nginx, meter_upstream,
                                  redis_server):
    """Three instances of 2 workers, a balance of 1.00 and a price of
    0.05: 300 concurrent calls spread over the nodes give exactly 20
    answers 200 and 280 answers 402, 20 times over."""
    ngxs = [start(start_nginx, meter_upstream) for _ in range(3)]
    rc = redis_server.client
    reps = 20
    keys = [make_key(redis_server, owner="node%02d" % i)
            for i in range(reps)]
    for k in keys:
        credit(rc, k.owner, micros("1.00"))
        for ngx in ngxs:
            assert call(ngx, k, "/warm/x").status == 200

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=48)
    try:
        for k in keys:
            futs = [pool.submit(call, ngxs[i % 3], k) for i in range(300)]
            statuses = [f.result().status for f in futs]
            ok = statuses.count(200)
            assert (ok, statuses.count(402)) == (20, 280), \
                (k.owner, sorted(set(statuses)), ok)
    finally:
        pool.shutdown()

    counts = meter_upstream.counts()
    for k in keys:
        assert counts.get((k.owner, "paid")) == 20, counts
        settled(rc, k.owner, micros("1.00"))


def test_top_up_reaches_every_node(start_nginx, meter_upstream,
                                   redis_server):
    """Refused at every node, then credited: every node serves the buyer
    again within a second, with no reload."""
    ngxs = [start(start_nginx, meter_upstream) for _ in range(3)]
    rc = redis_server.client
    k = make_key(redis_server, owner="topup")
    for ngx in ngxs:
        assert call(ngx, k).status == 402
    credit(rc, "topup", micros("5.00"))
    t0 = time.monotonic()
    waits = []
    for ngx in ngxs:
        def served():
            return call(ngx, k).status == 200
        wait_for(served, 5, interval=0.02, what="a 200 after the top-up")
        waits.append(time.monotonic() - t0)
    print("top-up seen after %s s" % ["%.3f" % w for w in waits])
    assert max(waits) <= 1.0, waits


def test_idle_leases_come_back(start_nginx, meter_upstream, redis_server):
    """A node that leased part of a balance gives back what it did not
    use once the buyer stops calling it."""
    ngx = start(start_nginx, meter_upstream)
    rc = redis_server.client
    k = make_key(redis_server, owner="idle")
    credit(rc, "idle", micros("100"))
    assert call(ngx, k).status == 200
    b = balance(rc, "idle")
    # ten prices leased (docs/metering.md), one of them spent
    assert b["held"] == 10 * micros(PRICE), b
    b = settled(rc, "idle", micros(PRICE))
    assert b["available"] == micros("100") - micros(PRICE), b


# ------------------------------------------------------ store down

@pytest.mark.allow_log("redis", "store unavailable", "Connection refused",
                       "connect()", "timed out")
def test_redis_down_without_lease(start_nginx, meter_upstream,
                                  redis_server):
    ngx = start(start_nginx, meter_upstream)
    k = make_key(redis_server, owner="down")
    assert call(ngx, k, "/warm/x").status == 200
    redis_server.kill()
    r = call(ngx, k)
    assert r.status == 503, r
    assert r.json()["code"] == "store_unavailable"
    # toll_prepaid_fallback open: the call passes, charged after the fact
    r = call(ngx, k, "/openpaid/x")
    assert r.status == 200, r
    assert r.header("X-Toll-Amount") == PRICE
    counts = meter_upstream.counts()
    assert counts.get(("down", "openpaid")) == 1, counts
    assert ("down", "paid") not in counts, counts


def test_directives_refused(nginx_t):
    for bad, msg in (
            ("toll_prepaid maybe;", "invalid value"),
            ("toll_prepaid_fallback paid;", "invalid value"),
            ("toll_prepaid_lease 0;", "must be 1 to 100000"),
            ("toll_prepaid_reclaim 10s;", "must be at least 60s")):
        rc, out, _ = nginx_t("    toll_redis 127.0.0.1:6379;\n    " + bad)
        assert rc != 0 and msg in out, (bad, out)


def test_problem_body_is_json(start_nginx, meter_upstream, redis_server):
    ngx = start(start_nginx, meter_upstream)
    k = make_key(redis_server, owner="jsonb")
    r = call(ngx, k)
    json.loads(r.body)
    assert r.header("Cache-Control") == "no-store"


def test_leases_go_back_when_nginx_stops(start_nginx, meter_upstream,
                                         redis_server):
    ngx = start(start_nginx, meter_upstream)
    rc = redis_server.client
    k = make_key(redis_server, owner="stops")
    credit(rc, "stops", micros("100"))
    assert call(ngx, k).status == 200
    assert balance(rc, "stops")["held"] > 0
    ngx.stop()
    b = invariant(rc, "stops")
    assert b["held"] == 0 and b["spent"] == micros(PRICE), b


# ------------------------------------------------------------ faults

def spend(ngxs, key, seconds, threads=4):
    """Calls the nodes from `threads` threads each for `seconds`: returns
    the statuses seen."""
    out = []
    stop = time.monotonic() + seconds

    def run(ngx):
        mine = []
        while time.monotonic() < stop:
            try:
                r = call(ngx, key, "/paid/x?delay_ms=20")
                mine.append(r.status)
            except Exception as e:  # a killed worker's connection
                mine.append(type(e).__name__)
        return mine

    with concurrent.futures.ThreadPoolExecutor(len(ngxs) * threads) as ex:
        futs = [ex.submit(run, ngx) for ngx in ngxs for _ in range(threads)]
        for f in futs:
            out += f.result()
    return out


@pytest.mark.allow_log("redis", "exited on signal 9", "Connection refused",
                       "connect()", "store unavailable", "closed",
                       "timed out")
def test_faults_never_overdraw(start_nginx, meter_upstream, redis_server):
    """A worker SIGKILLed, a reload and a Redis restart while a balance
    is being spent from two instances: never more charged than credited,
    and what Redis counts as spent is what the upstream received."""
    import os
    import signal
    import threading

    ngxs = [start(start_nginx, meter_upstream) for _ in range(2)]
    rc = redis_server.client
    k = make_key(redis_server, owner="faults")
    credits = micros("60.00")
    credit(rc, "faults", credits)
    for ngx in ngxs:
        assert call(ngx, k, "/warm/x").status == 200

    done = []

    def faults():
        time.sleep(0.4)
        os.kill(sorted(ngxs[0].worker_pids())[0], signal.SIGKILL)
        time.sleep(0.4)
        ngxs[1].reload()
        time.sleep(0.4)
        redis_server.restart_saved()
        done.append(meter_upstream.counts().get(("faults", "paid"), 0))

    t = threading.Thread(target=faults)
    t.start()
    statuses = spend(ngxs, k, 4.0)
    t.join()
    assert done, "the faults did not all happen"
    # the faults came while the balance was being spent
    assert 0 < done[0] < credits // micros(PRICE), done
    # the rest of the balance, spent after the faults
    for _ in range(6):
        more = spend(ngxs, k, 2.0)
        statuses += more
        if set(more) == {402}:
            break
    served = meter_upstream.counts().get(("faults", "paid"), 0)
    print("statuses: %r, upstream %d" % (
        {s: statuses.count(s) for s in set(statuses)}, served))
    assert served * micros(PRICE) <= credits, served
    for ngx in ngxs:
        ngx.stop()
    b = invariant(rc, "faults")
    assert b["held"] == 0, b
    assert b["spent"] == served * micros(PRICE), (b, served)
    assert b["available"] >= 0, b


def test_metrics_count_402_and_show_leases(start_nginx, meter_upstream,
                                           redis_server):
    from test_metrics import metrics, value
    ngx = start(start_nginx, meter_upstream)
    rc = redis_server.client
    k = make_key(redis_server, owner="metered")
    assert call(ngx, k).status == 402
    credit(rc, "metered", micros("100"))
    wait_for(lambda: call(ngx, k).status == 200, 2, interval=0.1,
             what="the top-up")
    fams = metrics(ngx)
    assert value(fams, "toll_requests_total", service="paid",
                 decision="payment_required") >= 1
    # ten prices leased, one held and then charged: nine left in the lease
    assert value(fams, "toll_prepaid_lease_micros", currency="USD") == \
        9 * micros(PRICE)
    assert value(fams, "toll_prepaid_balances", currency="USD") == 1
    assert value(fams, "toll_prepaid_unsure", currency="USD") == 0


# ------------------------------------------------ toll_usage, at once

USAGE = LOCATIONS.replace('''        location /warm/ {''', '''        location = /usage/me {
            toll on;
            toll_usage;
        }
        location /warm/ {''')


def usage_me(ngx, key):
    r = client.request(ngx.port, path="/usage/me", headers=[key.bearer()])
    assert r.status == 200, (r, r.body)
    return r.json()


def test_usage_reads_its_own_writes(start_nginx, meter_upstream,
                                    redis_server):
    """Each call is in the buyer's usage as soon as it ends, once: in
    Redis or in the zone of the nginx that served it, never both, while
    the meter flushes every 200 ms; the balance shows its charge at
    once."""
    ngx = start_nginx(http_extra=meter_http() + upstream_block(
        "meterapi", meter_upstream.port, keepalive=64), locations=USAGE,
        workers=1)
    rc = redis_server.client
    k = make_key(redis_server, owner="reader")
    credit(rc, "reader", micros("100"))
    for i in range(1, 61):
        assert call(ngx, k).status == 200
        u = usage_me(ngx, k)
        svc = {s["service"]: s for s in u["services"]}
        assert svc["paid"]["calls"] == i, (i, u)
        assert micros(svc["paid"]["amount"]) == i * micros(PRICE), (i, u)
        bal = {b["currency"]: b for b in u["balances"]}
        assert micros(bal["USD"]["balance"]) == \
            micros("100") - i * micros(PRICE), (i, u)
        time.sleep(0.01 * (i % 7))


def test_usage_without_balance_lists_none(start_nginx, meter_upstream,
                                          redis_server):
    ngx = start_nginx(http_extra=meter_http() + upstream_block(
        "meterapi", meter_upstream.port, keepalive=64), locations=USAGE)
    k = make_key(redis_server, owner="nobalance")
    assert call(ngx, k, "/postpaid/x").status == 200
    # the call is counted in its log phase, which may run after its
    # answer reached the client and the usage request reached a worker
    u = wait_for(lambda: (lambda u: u if u["services"] else None)(
        usage_me(ngx, k)), 5, what="the call in the usage answer")
    assert u["balances"] == [], u
    assert [s["calls"] for s in u["services"]] == [1], u
