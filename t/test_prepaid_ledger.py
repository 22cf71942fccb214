"""Prepaid money end to end (issue 15): credited with tollctl, spent at
the gate, metered, drained by toll-settle into the ledger, reconciled.

After every test: upstream = meter = ledger, debits = credits, the
buyer's prepaid account in the ledger = credits - charges - refunds, and
nothing spent beyond what was credited.
"""

import json
import subprocess

import pytest

from helpers import client
from helpers.balance import invariant
from helpers.keys import make_key
from helpers.meter import meter_http, meter_upstream, micros, proxy_to, \
    upstream_block
from helpers.settle import Settle, ledger_check, preload_env, tollctl_bin

assert meter_upstream  # a fixture, used by name

LOCATIONS = """
        location /paid/ {
            toll on;
            toll_prepaid on;
            toll_service paid provider=acme price=0.05;
            %s
        }
""" % proxy_to("meterapi")


@pytest.fixture
def settle(redis_server, tmp_path):
    s = Settle(redis_server, tmp_path / "ledger.db")
    yield s
    s.close()


def tollctl(settle, *args):
    p = subprocess.run([tollctl_bin(), "--redis", settle.redis.address,
                        "--ledger", settle.ledger] + list(args),
                       env=preload_env(), capture_output=True, text=True,
                       timeout=60)
    return p


def accounts(settle):
    """{account: credits - debits}, read independently of tollctl."""
    import sqlite3
    db = sqlite3.connect("file:%s?mode=ro" % settle.ledger, uri=True)
    try:
        return dict(db.execute(
            "SELECT a.name, sum(e.credit_micros) - sum(e.debit_micros)"
            " FROM accounts a JOIN entries e ON e.account_id = a.id"
            " GROUP BY a.id"))
    finally:
        db.close()


def test_credit_spend_settle_reconcile(start_nginx, meter_upstream,
                                       redis_server, settle):
    ngx = start_nginx(http_extra=meter_http() + upstream_block(
        "meterapi", meter_upstream.port), locations=LOCATIONS)
    rc = redis_server.client
    k = make_key(redis_server, owner="e2e")

    p = tollctl(settle, "balance", "credit", "e2e", "2.00", "--ref", "pay-1")
    assert p.returncode == 0, p.stderr
    statuses = [client.request(ngx.port, path="/paid/x",
                               headers=[k.bearer()]).status
                for _ in range(45)]
    assert statuses.count(200) == 40 and statuses.count(402) == 5, statuses
    ngx.stop()

    # half of it back to the buyer? nothing is left: refused, nothing
    # written
    p = tollctl(settle, "balance", "refund", "e2e", "0.01", "--ref", "rf-1")
    assert p.returncode == 65, (p.returncode, p.stderr)
    p = tollctl(settle, "balance", "credit", "e2e", "1.00", "--ref", "pay-2")
    assert p.returncode == 0, p.stderr
    p = tollctl(settle, "balance", "refund", "e2e", "0.25", "--ref", "rf-2")
    assert p.returncode == 0, p.stderr

    p = settle.once()
    assert p.returncode == 0, p.stderr

    served = meter_upstream.counts()[("e2e", "paid")]
    assert served == 40
    b = invariant(rc, "e2e")
    assert b["spent"] == served * micros("0.05") == micros("2.00"), b
    assert b["available"] == micros("0.75") and b["held"] == 0, b

    ledger_check(settle.ledger)
    acc = accounts(settle)
    # the liability: 3.00 in, 2.00 charged, 0.25 refunded
    assert acc["prepaid:USD:e2e"] == micros("0.75"), acc
    # cash: collections less the refund (a debit-normal asset)
    assert acc["platform:cash"] == -micros("2.75"), acc
    # the provider and the fee got the charges, the buyer owes nothing
    assert acc.get("buyer:e2e", 0) == 0, acc
    assert acc["provider:acme"] + acc.get("platform:fees", 0) == \
        micros("2.00"), acc

    p = tollctl(settle, "reconcile", "--json")
    assert p.returncode == 0, (p.stdout, p.stderr)
    r = json.loads(p.stdout)
    assert r["ok"] and r["balances"]["differences"] == 0, r
