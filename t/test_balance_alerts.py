"""Balance alerts (issue 15 item 5, docs/settle.md "Balance alerts"):
balance.low and balance.exhausted as signed webhooks, once per threshold
per period, a period lasting until the balance's next credit.

    1. bad balance_low lines refused at start (78, one line)
    2. low once when crossing, not again at the next passes; exhausted
       once; a top-up re-arms both; two currencies apart
    3. a crash after the alert's commit, or after the usage batch's
       before the alerts ran: one delivery, never two, never none
    4. the daemon counts them on its metrics page

Real Redis, real toll-settle, a webhook receiver here that checks each
signature with Python's hmac.  Balances are written as tollctl writes
them (lua/balance.lua through helpers.balance.credit) and spent as the
meter's flush does (a usage hash with prepaid_micros, the balance's
available moved to spent).
"""

import hashlib
import hmac
import http.client
import json
import sqlite3
import threading

import pytest

from helpers.balance import balance_key, credit
from helpers.httpd import QuietHandler, serve
from helpers.procs import free_port, port_answers, wait_for
from helpers.settle import Settle, usage_key, write_usage, day


SECRET = "whsec_alerts"
LOW = "balance.low"
EXHAUSTED = "balance.exhausted"
EVENTS = "events=%s,%s" % (LOW, EXHAUSTED)
M = 1000000                          # micro-units in a unit


# --------------------------------------------------------------- receiver


class Receiver:
    """Takes every POST, answers 200, keeps (headers, body, json)."""

    def __init__(self):
        self.got = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with receiver.lock:
                    receiver.got.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server, self.thread = serve(Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]

    def events(self, type_=None):
        """The bodies received, each checked: signature, headers."""
        out = []
        with self.lock:
            got = list(self.got)
        for headers, body in got:
            assert signature_ok(headers, body), headers
            ev = json.loads(body)
            assert headers["X-Toll-Event"] == ev["type"]
            assert headers["X-Toll-Event-Id"] == ev["id"]
            if type_ is None or ev["type"] == type_:
                out.append(ev)
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def signature_ok(headers, body):
    """docs/settle.md's receiver check, independent of toll."""
    parts = dict(p.split("=", 1)
                 for p in headers.get("X-Toll-Signature", "").split(","))
    want = hmac.new(SECRET.encode(), ("%s." % parts["t"]).encode() + body,
                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts.get("v1", ""), want)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def make_settle(redis_server, tmp_path, receiver):
    made = []

    def make(lows=("USD 2.00",), extra=()):
        lines = ["webhook %s %s secret=%s" % (receiver.url, EVENTS, SECRET)]
        lines += ["balance_low %s" % low for low in lows]
        lines += list(extra)
        s = Settle(redis_server, tmp_path / "ledger.db", conf_lines=lines)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


# ---------------------------------------------------------------- helpers


def spend(rc, buyer, micros, cur="USD", service="svc"):
    """A meter flush of calls a balance paid: the usage hash with its
    prepaid part and currency, and the balance's available to spent."""
    write_usage(rc, buyer, service, "prov", calls=1,
                amount_micros=micros)
    key = usage_key(buyer, day())
    p = rc.pipeline(transaction=True)
    p.hincrby(key, service + ":prepaid_micros", micros)
    p.hset(key, service + ":currency", cur)
    p.hincrby(balance_key(buyer), cur + ":available", -micros)
    p.hincrby(balance_key(buyer), cur + ":spent", micros)
    p.execute()


def once(settle, env=None):
    p = settle.once(env=env)
    assert p.returncode == 0, p.stderr
    return p


def alert_rows(settle):
    db = sqlite3.connect("file:%s?mode=ro" % settle.ledger, uri=True,
                         timeout=30)
    try:
        return db.execute("SELECT buyer, currency, kind, credits_micros,"
                          " balance_micros, threshold_micros"
                          " FROM balance_alerts ORDER BY id").fetchall()
    finally:
        db.close()


def kinds(receiver, buyer=None):
    return [(e["type"], e["data"]["currency"], e["data"]["balance"])
            for e in receiver.events()
            if buyer is None or e["data"]["buyer"] == buyer]


# ===================================================== 1. the config lines


@pytest.mark.parametrize("line,words", [
    ("balance_low USD", '"balance_low" takes a currency and an amount'),
    ("balance_low USD 1 2", '"balance_low" takes a currency and an amount'),
    ("balance_low usd 1.00", 'invalid currency "usd"'),
    ("balance_low US 1.00", 'invalid currency "US"'),
    ("balance_low USD -1", 'invalid balance_low amount "-1"'),
    ("balance_low USD 1.0000001", 'invalid balance_low amount "1.0000001"'),
    ("balance_low USD 9223372036855", 'invalid balance_low amount'),
    ("balance_low USD 0", 'invalid balance_low amount "0": must be above 0'),
    ("balance_low USD 1x", 'invalid balance_low amount "1x"'),
    ("balance_low USD 1\nbalance_low USD 2",
     '"balance_low USD" is given twice'),
    ("webhook http://x events=balance.lowish secret=s",
     'unknown event "balance.lowish"'),
])
def test_bad_lines_refused(redis_server, tmp_path, line, words):
    s = Settle(redis_server, tmp_path / "ledger.db", conf_lines=[line])
    p = s.once()
    assert p.returncode == 78, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("toll-settle: %s:" % s.conf), lines
    assert words in lines[0], lines
    # nothing was made: the ledger is not even created
    assert not (tmp_path / "ledger.db").exists()


def test_good_lines_taken(redis_server, tmp_path):
    s = Settle(redis_server, tmp_path / "ledger.db", conf_lines=[
        "balance_low USD 5", "balance_low EUR 0.000001",
        "balance_low USDC 9223372036854.775807",
        "webhook http://127.0.0.1:1/h events=balance.low,balance.exhausted "
        "secret=s"])
    once(s)


# ========================================================== 2. when, once


def test_low_once_when_crossing(make_settle, redis_server, receiver):
    rc = redis_server.client
    s = make_settle()
    credit(rc, "acme", 10 * M)
    once(s)
    assert kinds(receiver) == []

    spend(rc, "acme", 7500000)          # 2.50 left: above 2.00
    once(s)
    assert kinds(receiver) == []

    spend(rc, "acme", 1 * M)            # 1.50: crossed
    once(s)
    evs = receiver.events(LOW)
    assert len(evs) == 1
    data = evs[0]["data"]
    assert data["buyer"] == "acme" and data["currency"] == "USD"
    assert data["balance"] == "1.50" and data["threshold"] == "2.00"
    assert data["credits"] == "10.00"
    assert data["at"].endswith("Z")
    assert evs[0]["created"] > 0

    # the next passes, nothing moved, and more spending below: no more
    once(s)
    spend(rc, "acme", 100000)
    once(s)
    once(s)
    assert kinds(receiver) == [(LOW, "USD", "1.50")]
    assert alert_rows(s) == [("acme", "USD", "low", 10 * M, 1500000,
                              2 * M)]


def test_exhausted_once(make_settle, redis_server, receiver):
    rc = redis_server.client
    s = make_settle()
    credit(rc, "beta", 5 * M)
    once(s)

    spend(rc, "beta", 5 * M)            # 0: exhausted, never low first
    once(s)
    assert kinds(receiver) == [(EXHAUSTED, "USD", "0.00")]
    assert "threshold" not in receiver.events()[0]["data"]

    spend(rc, "beta", 50000)            # a node that overdrew: below 0
    once(s)
    once(s)
    assert kinds(receiver) == [(EXHAUSTED, "USD", "0.00")]
    assert [r[2] for r in alert_rows(s)] == ["exhausted"]


def test_no_threshold_no_low(make_settle, redis_server, receiver):
    rc = redis_server.client
    s = make_settle(lows=())
    credit(rc, "gamma", 3 * M)
    spend(rc, "gamma", 2900000)
    once(s)
    assert kinds(receiver) == []
    spend(rc, "gamma", 100000)
    once(s)
    assert kinds(receiver) == [(EXHAUSTED, "USD", "0.00")]


def test_topup_rearms(make_settle, redis_server, receiver):
    rc = redis_server.client
    s = make_settle()
    credit(rc, "acme", 10 * M)
    spend(rc, "acme", 8500000)
    once(s)
    assert kinds(receiver) == [(LOW, "USD", "1.50")]

    credit(rc, "acme", 5 * M)           # 6.50: above again, a new period
    once(s)
    assert len(kinds(receiver)) == 1

    spend(rc, "acme", 5 * M)            # 1.50 again: sent again
    once(s)
    spend(rc, "acme", 1500000)          # 0
    once(s)
    once(s)
    assert kinds(receiver) == [(LOW, "USD", "1.50"), (LOW, "USD", "1.50"),
                               (EXHAUSTED, "USD", "0.00")]
    assert [e["data"]["credits"] for e in receiver.events()] == [
        "10.00", "15.00", "15.00"]

    # a debit (a refund, a manual charge) lowers but does not re-arm
    credit(rc, "acme", 1 * M)           # 1.00 and a new period: low
    once(s)
    credit(rc, "acme", 500000, kind="debit")
    once(s)
    assert kinds(receiver)[3:] == [(LOW, "USD", "1.00")]


def test_currencies_independent(make_settle, redis_server, receiver):
    rc = redis_server.client
    s = make_settle(lows=("USD 2.00", "EUR 1.00"))
    credit(rc, "acme", 10 * M, currency="USD")
    credit(rc, "acme", 10 * M, currency="EUR")
    once(s)

    spend(rc, "acme", 8500000, cur="USD")
    once(s)
    assert kinds(receiver) == [(LOW, "USD", "1.50")]

    spend(rc, "acme", 9500000, cur="EUR", service="eu")
    once(s)
    assert kinds(receiver) == [(LOW, "USD", "1.50"), (LOW, "EUR", "0.50")]

    spend(rc, "acme", 500000, cur="EUR", service="eu")
    once(s)
    assert kinds(receiver) == [(LOW, "USD", "1.50"), (LOW, "EUR", "0.50"),
                               (EXHAUSTED, "EUR", "0.00")]
    # and buyers apart: another's balance is its own
    credit(rc, "beta", 1 * M, currency="EUR")
    once(s)
    assert kinds(receiver, "beta") == [(LOW, "EUR", "1.00")]


# ============================================================= 3. crashes


def test_crash_after_alert_commit_sends_once(make_settle, redis_server,
                                             receiver):
    rc = redis_server.client
    s = make_settle()
    credit(rc, "acme", 10 * M)
    spend(rc, "acme", 8500000)

    p = s.once(env={"TOLL_SETTLE_CRASH": "alert"})
    assert p.returncode == -9, p.stderr
    assert "killed after alert" in p.stderr
    assert len(alert_rows(s)) == 1

    # the restart sends what the dead one wrote; more spending, no more
    once(s)
    spend(rc, "acme", 100000)
    once(s)
    assert kinds(receiver) == [(LOW, "USD", "1.50")]
    assert len(alert_rows(s)) == 1


def test_crash_after_usage_commit_alerts_once(make_settle, redis_server,
                                              receiver):
    """Killed after the batch's COMMIT, before the alerts ran: the next
    start finds the batch committed, and checks its buyer then."""
    rc = redis_server.client
    s = make_settle()
    credit(rc, "acme", 10 * M)
    once(s)
    spend(rc, "acme", 8500000)

    p = s.once(env={"TOLL_SETTLE_CRASH": "commit"})
    assert p.returncode == -9, p.stderr
    assert alert_rows(s) == []

    once(s)
    once(s)
    assert kinds(receiver) == [(LOW, "USD", "1.50")]


def test_crash_before_alerts_alerts_once(make_settle, redis_server,
                                         receiver):
    """Killed after the pass's deletes, before its alerts: Redis holds
    nothing of the move any more; the next start finds the buyer in the
    ledger's last transactions and checks it."""
    rc = redis_server.client
    s = make_settle()
    credit(rc, "acme", 10 * M)
    credit(rc, "beta", 1 * M, currency="EUR")
    once(s)
    spend(rc, "acme", 8500000)

    p = s.once(env={"TOLL_SETTLE_CRASH": "moved"})
    assert p.returncode == -9, p.stderr
    assert "killed after moved" in p.stderr
    assert rc.scard("toll:usage:index") == 0
    assert rc.scard("toll:drain:open") == 0
    assert alert_rows(s) == []

    once(s)
    once(s)
    # beta's EUR has no balance_low: nothing for it, then or now
    assert kinds(receiver) == [(LOW, "USD", "1.50")]


# ============================================================= 4. metrics


def test_metrics_count_alerts(make_settle, redis_server, receiver):
    rc = redis_server.client
    port = free_port()
    s = make_settle(extra=["metrics_listen 127.0.0.1:%d" % port])
    p = s.start()
    wait_for(lambda: port_answers(port), 10, what="metrics")

    credit(rc, "acme", 3 * M)
    credit(rc, "beta", 3 * M)
    credit(rc, "gamma", 3 * M)
    spend(rc, "acme", 2 * M)            # low
    spend(rc, "gamma", 2500000)         # low
    spend(rc, "beta", 3 * M)            # exhausted

    def page():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    want = ('toll_settle_balance_alerts_total{kind="low"} 2',
            'toll_settle_balance_alerts_total{kind="exhausted"} 1')
    wait_for(lambda: all(w in page().splitlines() for w in want), 20,
             what="the alerts counted")
    wait_for(lambda: len(receiver.events()) == 3, 20, what="three alerts")
    assert sorted(k[0] for k in kinds(receiver)) == [EXHAUSTED, LOW, LOW]
    assert s.stop(p) == 0
