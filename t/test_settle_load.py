"""toll-settle behind the real gate (issue 5): the ledger equals the meter
equals the upstream's count.

    1. 100,000 metered calls through nginx while toll-settle is killed with
       SIGKILL 10 times at random moments (and restarted): ledger total =
       meter total = upstream hits, debits = credits, integrity ok
    2. toll_usage still counts what was drained (the mirror)
"""

import json
import random
import signal
import sqlite3
import threading
import time

import pytest

from helpers import client
from helpers.keys import make_key
from helpers.meter import (meter_upstream, micros, proxy_to, run_wrk,
                           upstream_block, wait_usage)
from helpers.settle import (Settle, ledger_check, ledger_usage,
                            wait_drained)

assert meter_upstream  # a fixture, used by name

PRICE = "0.05"
PROXY = proxy_to("meterapi")

LOCATIONS = """
        location /warm/ {
            toll on;
            %(proxy)s
        }
        location /api/ {
            toll on;
            toll_service api provider=acme price=%(price)s free_calls=100;
            %(proxy)s
        }
        location = /usage/me {
            toll on;
            toll_usage;
        }
""" % {"proxy": PROXY, "price": PRICE}


def start(start_nginx, up, workers=2):
    http = ("    toll_meter_flush 100ms;\n"
            + upstream_block("meterapi", up.port, keepalive=64))
    return start_nginx(http_extra=http, locations=LOCATIONS,
                       workers=workers)


def get(ngx, key, path):
    return client.request(ngx.port, path=path, headers=[key.bearer()])


@pytest.mark.slow
def test_100k_calls_with_10_kills(start_nginx, meter_upstream, redis_server,
                                  tmp_path):
    n = 100000
    ngx = start(start_nginx, meter_upstream)
    keys = [make_key(redis_server, owner="load-%d" % i) for i in range(4)]
    for k in keys:
        assert get(ngx, k, "/warm/x").status == 200

    settle = Settle(redis_server, tmp_path / "ledger.db")
    rng = random.Random(100)
    kills = []
    stop = threading.Event()
    state = {"p": settle.start(interval="100ms")}

    def killer():
        # 10 SIGKILLs at random moments of the load, each followed by a
        # restart: the new worker finishes what the dead one left
        while len(kills) < 10 and not stop.is_set():
            time.sleep(rng.uniform(0.3, 2.0))
            p = state["p"]
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
            kills.append(time.monotonic())
            state["p"] = settle.start(interval="100ms")

    t = threading.Thread(target=killer)
    base = meter_upstream.total
    t.start()
    try:
        done, non2xx, out = run_wrk(
            tmp_path, ngx.port, "/api/x", [k.token for k in keys], n,
            lambda: meter_upstream.total - base >= n, threads=2,
            connections=16, max_s=240)
        # the kills go on until there were 10
        t.join(timeout=60)
    finally:
        stop.set()
        t.join(timeout=30)
    assert len(kills) == 10
    assert non2xx == 0, out

    # nothing more can be metered once nginx has stopped gracefully
    ngx.stop()
    wait_drained(redis_server.client, timeout=60)
    assert settle.stop(state["p"]) == 0
    settle.close()

    hits = {b: c for (b, s), c in meter_upstream.counts().items()
            if s == "api"}
    assert sum(hits.values()) >= n
    got = ledger_usage(settle.ledger)
    per_buyer = {}
    for (buyer, _day, svc), rec in got.items():
        assert svc == "api"
        cur = per_buyer.setdefault(buyer, {"calls": 0, "free_calls": 0,
                                           "paid_calls": 0,
                                           "amount_micros": 0})
        for f in cur:
            cur[f] += rec[f]
    assert {b: r["calls"] for b, r in per_buyer.items()} == hits
    for b, r in per_buyer.items():
        # the free tier: exactly 100 per buyer, the rest paid
        assert r["free_calls"] == 100, (b, r)
        assert r["paid_calls"] == r["calls"] - 100
        assert r["amount_micros"] == r["paid_calls"] * micros(PRICE)
    sums = ledger_check(settle.ledger)
    assert sums["debits"] == sum(r["amount_micros"]
                                 for r in per_buyer.values())
    db = sqlite3.connect(settle.ledger)
    batches = db.execute("SELECT count(*) FROM batches").fetchone()[0]
    db.close()
    print("upstream %d calls; ledger %d calls in %d batches; 10 kills"
          % (sum(hits.values()), sum(r["calls"] for r in per_buyer.values()),
             batches))


def test_usage_me_counts_drained_calls(start_nginx, meter_upstream,
                                       redis_server, tmp_path):
    ngx = start(start_nginx, meter_upstream, workers=1)
    alice = make_key(redis_server, owner="alice")
    for _ in range(103):
        assert get(ngx, alice, "/api/x").status == 200

    settle = Settle(redis_server, tmp_path / "ledger.db")

    def usage():
        r = get(ngx, alice, "/usage/me")
        assert r.status == 200, r.body
        return json.loads(r.body)["totals"]

    want = {"calls": 103, "free_calls": 100, "paid_calls": 3, "errors": 0,
            "amount": "0.15"}
    deadline = time.monotonic() + 10
    while usage() != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert usage() == want
    # the answer reads the node's unflushed counts too: let every flush
    # land first, so that the drain below leaves no live usage hash
    wait_usage(redis_server.client, {("alice", "api"): {"calls": 103}},
               fields=("calls",))
    assert settle.once().returncode == 0
    assert redis_server.client.keys("toll:usage:{alice}:2*") == [
        k for k in redis_server.client.keys("toll:usage:{alice}:2*")
        if k.endswith(":drained")]
    # drained into the ledger, and the buyer still sees every call
    assert usage() == want
    for _ in range(2):
        assert get(ngx, alice, "/api/x").status == 200
    want.update(calls=105, paid_calls=5, amount="0.25")
    deadline = time.monotonic() + 10
    while usage() != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert usage() == want
    settle.close()
