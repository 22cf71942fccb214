"""Issue 17's gate on the money path, with a fault in the middle.

A prepaid, metered service behind toll_require and limits per buyer: two
keys of one buyer, one with the scope it asks and one without, call it
while Redis stops answering for a while.  Afterwards: every call the
upstream saw is metered and in the ledger once, and nothing else (no 403
charged or metered), debits = credits, the balance's invariant holds and
it is never overdrawn.
"""

import time

import pytest

from helpers import client
from helpers.balance import credit, invariant
from helpers.keys import raw_key
from helpers.meter import meter_http, meter_upstream, proxy_to, \
    upstream_block, usage
from helpers.procs import wait_for
from helpers.settle import Settle, ledger_check, ledger_usage

assert meter_upstream  # a fixture, used by name

PRICE = 50000                       # 0.05, in micro-units
CREDIT = 1000000                    # 1.00: twenty calls

LOCATIONS = """
        location /paid/ {
            toll on;
            toll_service paid provider=acme price=0.05;
            toll_prepaid on;
            toll_require scope=pay;
            toll_limit_key buyer;
            %s
        }
""" % proxy_to("meterapi")


@pytest.fixture
def settle(redis_server, tmp_path):
    s = Settle(redis_server, tmp_path / "ledger.db")
    yield s
    s.close()


def call(ngx, key):
    return client.request(ngx.port, path="/paid/x", headers=[key.bearer()],
                          timeout=10).status


@pytest.mark.allow_log(r"toll")
def test_refusals_and_a_stalled_redis_keep_the_money_exact(
        start_nginx, meter_upstream, redis_server, settle):
    ngx = start_nginx(http_extra=meter_http()
                      + "    toll_plan shared rate=100000r/m;\n"
                      + "    toll_default_plan shared;\n"
                      + upstream_block("meterapi", meter_upstream.port),
                      locations=LOCATIONS, redis_timeout="300ms")
    rc = redis_server.client
    payer = raw_key(redis_server, owner="acme", extra={"scopes": "pay"})
    viewer = raw_key(redis_server, owner="acme", extra={"scopes": "read"})
    assert credit(rc, "acme", CREDIT)[0] == 1

    got = {"payer": [], "viewer": []}

    def round_of(n):
        for _ in range(n):
            got["payer"].append(call(ngx, payer))
            got["viewer"].append(call(ngx, viewer))

    # the node's first lease holds ten prices: the fault comes when it
    # runs out, and lasts past a meter flush (every 200 ms)
    round_of(9)
    redis_server.freeze()            # the fault: Redis stops answering
    try:
        round_of(4)
        time.sleep(0.5)
    finally:
        redis_server.thaw()
    # then until the balance is spent: 402, never an overdraft (503s
    # while the node reconnects: a balance fails closed)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        round_of(1)
        if got["payer"][-1] == 402:
            break
        if got["payer"][-1] == 503:
            time.sleep(0.05)

    passed = got["payer"].count(200)
    assert set(got["viewer"]) == {403}, got
    assert set(got["payer"]) <= {200, 402, 503}, got
    assert got["payer"][-1] == 402, got
    assert 0 < passed <= CREDIT // PRICE, got

    # upstream = meter: only the payer's calls went up, each metered once
    assert meter_upstream.counts() == {("acme", "paid"): passed}
    wait_for(lambda: usage(rc).get(("acme", "paid"), {}).get("calls")
             == passed, 15, what="every passed call to be flushed")
    u = usage(rc)[("acme", "paid")]
    assert (u["calls"], u["paid_calls"], u["amount_micros"]) == \
        (passed, passed, passed * PRICE), u

    # the balance: what it paid is what was charged, never below zero
    def spent():
        b = invariant(rc, "acme")
        return b.get("held", 0) == 0 and b.get("spent", 0) == passed * PRICE
    wait_for(spent, 15, interval=0.1, what="the balance to settle")
    b = invariant(rc, "acme")
    assert b.get("available", 0) >= 0, b
    assert b["available"] + b["spent"] == CREDIT, b

    # meter = ledger, debits = credits
    p = settle.once()
    assert p.returncode == 0, p.stderr
    rows = {k: v for k, v in ledger_usage(settle.ledger).items()
            if k[0] == "acme"}
    assert sum(v["calls"] for v in rows.values()) == passed, rows
    assert sum(v["amount_micros"] for v in rows.values()) == \
        passed * PRICE, rows
    ledger_check(settle.ledger)
