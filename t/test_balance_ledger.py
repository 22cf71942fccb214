"""Prepaid balances in the ledger (issue 15, docs/settle.md "Prepaid
balances"): toll-settle posts the journals tollctl balance writes, usage
paid by a balance is split, and tollctl reconcile checks both sides.

    1. credits, refunds and debits posted: entries, debits = credits,
       journal and index emptied, the refs kept
    2. once by (buyer, ref): a pass that died after its COMMIT, a ref
       put back in the journal; nothing doubles
    3. what cannot be posted stays in the journal, said once, and never
       holds up the others: a malformed record, a ref without one, a ref
       posted with another content, a buyer no one can name, a journal
       of another type
    4. usage a balance paid: split between the prepaid account and the
       buyer's; a prepaid part above the amount is quarantined
    5. reconcile: consistent data passes; a tampered balance hash, a
       record lost from the ledger and one not posted are told apart

Balance records are written as tollctl balance writes them: lua/balance.lua
run with EVAL (its KEYS and ARGV as its comment says), then the buyer
SADDed into toll:balance:index.
"""

import json
import os
import sqlite3
import subprocess

import pytest

from helpers.procs import wait_for
from helpers.settle import (Settle, day, ledger_check, preload_env,
                            tollctl_bin, usage_key, write_usage)

LUA = os.path.join(os.path.dirname(__file__), "..", "lua", "balance.lua")
INT64_MAX = (1 << 63) - 1
T = 1772323200
INDEX = "toll:balance:index"


@pytest.fixture
def settle(redis_server, tmp_path):
    s = Settle(redis_server, tmp_path / "ledger.db")
    yield s
    s.close()


def bal_key(buyer, suffix=""):
    return "toll:balance:{%s}%s" % (buyer, suffix)


def balance_op(rc, buyer, kind, cur, micros, ref, unix=T, record=None):
    """One credit, debit or refund as tollctl balance makes it (record:
    another text for its record, as a broken writer would make it)."""
    with open(LUA) as f:
        script = f.read()
    record = record or "%s %s %d %d" % (kind, cur, micros, unix)
    field = "%s:%s" % (cur, "credits" if kind == "credit" else "debits")
    r = rc.eval(script, 3, bal_key(buyer), bal_key(buyer, ":refs"),
                bal_key(buyer, ":journal"), ref, record, field, str(micros),
                "%s:available" % cur, str(INT64_MAX - micros),
                "credit" if kind == "credit" else "take")
    rc.sadd(INDEX, buyer)
    return r


def write_prepaid_usage(rc, buyer, service, provider, calls, price,
                        prepaid, cur="USD", d=None):
    """A flush as lua/meter.lua writes it: the counts, what the balance
    paid and the currency, and the balance's hold moved to spent."""
    d = d or day()
    write_usage(rc, buyer, service, provider, d=d, calls=calls,
                price_micros=price)
    key = usage_key(buyer, d)
    p = rc.pipeline(transaction=True)
    p.hincrby(key, service + ":prepaid_micros", prepaid)
    p.hset(key, service + ":currency", cur)
    p.hincrby(bal_key(buyer), cur + ":available", -prepaid)
    p.hincrby(bal_key(buyer), cur + ":spent", prepaid)
    p.execute()


def once(settle, env=None):
    p = settle.once(env=env)
    assert p.returncode == 0, p.stderr
    return p


def sql(settle, query, *params):
    db = sqlite3.connect("file:%s?mode=ro" % settle.ledger, uri=True,
                         timeout=30)
    try:
        return db.execute(query, params).fetchall()
    finally:
        db.close()


def balances(settle):
    """{account: credits - debits} of every account."""
    return dict(sql(settle, "SELECT a.name, sum(e.credit_micros)"
                            " - sum(e.debit_micros) FROM accounts a"
                            " JOIN entries e ON e.account_id = a.id"
                            " GROUP BY a.id"))


def balance_txs(settle):
    return sql(settle, "SELECT kind, buyer, ref, currency, amount_micros,"
                       " provider FROM transactions WHERE ref IS NOT NULL"
                       " ORDER BY id")


def tollctl(settle, *args):
    return subprocess.run([tollctl_bin(), "--redis", settle.redis.address,
                           "--ledger", settle.ledger] + list(args),
                          env=preload_env(), capture_output=True, text=True,
                          timeout=60)


# ============================================================ 1. posting

def test_kinds_posted(settle, redis_server):
    rc = redis_server.client
    assert balance_op(rc, "acme", "credit", "USD", 10000000, "c1")[0] == 1
    assert balance_op(rc, "acme", "refund", "USD", 1000000, "r1")[0] == 1
    assert balance_op(rc, "acme", "debit", "USD", 500000, "d1")[0] == 1
    assert balance_op(rc, "beta", "credit", "EUR", 7, "c1")[0] == 1

    once(settle)

    assert sorted(balance_txs(settle)) == sorted([
        ("credit", "acme", "c1", "USD", 10000000, None),
        ("refund", "acme", "r1", "USD", 1000000, None),
        ("debit", "acme", "d1", "USD", 500000, None),
        ("credit", "beta", "c1", "EUR", 7, None)])
    b = balances(settle)
    assert b["prepaid:USD:acme"] == 8500000
    assert b["prepaid:EUR:beta"] == 7
    assert b["platform:cash"] == -(10000000 + 7 - 1000000)
    assert b["platform:adjustments"] == 500000
    ledger_check(settle.ledger)

    # the journal and the index are emptied; the refs stay, forever
    assert rc.scard(bal_key("acme", ":journal")) == 0
    assert rc.scard(INDEX) == 0
    assert rc.hlen(bal_key("acme", ":refs")) == 3

    # tollctl reads the new accounts, and checks the ledger
    p = tollctl(settle, "--json", "ledger", "balance", "prepaid:USD:acme")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert (j["kind"], j["normal_side"], j["balance"]) == \
        ("prepaid", "credit", "8.50")
    p = tollctl(settle, "--json", "ledger", "entries", "--account",
                "platform:adjustments")
    assert p.returncode == 0, p.stderr
    e, = json.loads(p.stdout)
    assert (e["kind"], e["ref"], e["buyer"], e["currency"]) == \
        ("debit", "d1", "acme", "USD")
    p = tollctl(settle, "ledger", "entries", "--account", "prepaid:EUR:beta")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[1].split()[-2:] == ["beta", "c1"]
    p = tollctl(settle, "ledger", "check")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ok    balance_entries" in p.stdout


# ===================================================== 2. once by a ref

def test_crash_after_commit_posts_once(settle, redis_server):
    rc = redis_server.client
    balance_op(rc, "acme", "credit", "USD", 3000000, "c1")
    balance_op(rc, "acme", "credit", "USD", 2000000, "c2")

    # killed after the ledger's COMMIT, before the SREM
    p = settle.once(env={"TOLL_SETTLE_CRASH": "commit"})
    assert p.returncode != 0
    assert "killed after commit" in p.stderr
    assert len(balance_txs(settle)) == 2
    assert rc.scard(bal_key("acme", ":journal")) == 2
    # reconcile counts them as the ledger's, not as pending twice
    p, r = reconcile(settle)
    assert p.returncode == 0, p.stdout + p.stderr

    once(settle)
    assert len(balance_txs(settle)) == 2
    assert balances(settle)["prepaid:USD:acme"] == 5000000
    assert rc.scard(bal_key("acme", ":journal")) == 0
    assert rc.scard(INDEX) == 0

    # a ref back in the journal and the index: nothing doubles
    rc.sadd(bal_key("acme", ":journal"), "c1")
    rc.sadd(INDEX, "acme")
    once(settle)
    assert len(balance_txs(settle)) == 2
    assert balances(settle)["prepaid:USD:acme"] == 5000000
    assert rc.scard(bal_key("acme", ":journal")) == 0
    assert rc.scard(INDEX) == 0
    ledger_check(settle.ledger)

    # the same ref again through the script: Redis writes nothing
    assert balance_op(rc, "acme", "credit", "USD", 3000000, "c1")[0] == 0
    once(settle)
    assert len(balance_txs(settle)) == 2


# ================================================ 3. what cannot be posted

BAD_RECORDS = [
    "credit USD 007 %d" % T,
    "credit USD 0 %d" % T,
    "credit USD -5 %d" % T,
    "credit usd 5 %d" % T,
    "credits USD 5 %d" % T,
    "credit USD 5",
    "credit USD 5 %d extra" % T,
    "credit  USD 5 %d" % T,
    "credit USD 5 %d " % T,
    "credit USD 9223372036854775808 %d" % T,
    "credit USD 5 01",
    "credit USD 5 1.5",
    "",
]


def test_bad_records_left(settle, redis_server):
    rc = redis_server.client
    balance_op(rc, "acme", "credit", "USD", 1000000, "good")
    balance_op(rc, "beta", "credit", "USD", 2000000, "good")
    for i, rec in enumerate(BAD_RECORDS):
        rc.hset(bal_key("acme", ":refs"), "bad%d" % i, rec)
        rc.sadd(bal_key("acme", ":journal"), "bad%d" % i)
    rc.sadd(bal_key("acme", ":journal"), "norecord")

    log = settle.start()
    wait_for(lambda: rc.scard(bal_key("beta", ":journal")) == 0
             and rc.scard(bal_key("acme", ":journal"))
             == len(BAD_RECORDS) + 1, 30, what="the good records posted")
    # a few passes more: each left record is said once
    passes = int(rc.info("stats")["total_commands_processed"])
    wait_for(lambda: int(rc.info("stats")["total_commands_processed"])
             > passes + 50, 30, what="more passes")
    assert settle.stop(log) == 0
    text = Settle.log_text(log)
    assert "Sanitizer" not in text, text

    assert sorted(r[1:3] for r in balance_txs(settle)) == \
        [("acme", "good"), ("beta", "good")]
    for i in range(len(BAD_RECORDS)):
        assert text.count('balance record "bad%d" of buyer "acme" left'
                          % i) == 1, text
    assert text.count('"norecord" of buyer "acme" left in its journal: '
                      'no record') == 1, text
    # acme keeps its place in the index; beta is done
    assert rc.smembers(INDEX) == {"acme"}
    ledger_check(settle.ledger)


def test_ref_with_another_content_refused(settle, redis_server):
    rc = redis_server.client
    balance_op(rc, "acme", "credit", "USD", 1000000, "c1")
    once(settle)

    # someone rewrote the record of a posted ref, and put it back
    rc.hset(bal_key("acme", ":refs"), "c1", "credit USD 9000000 %d" % T)
    rc.sadd(bal_key("acme", ":journal"), "c1")
    balance_op(rc, "acme", "credit", "USD", 1, "c2")
    p = once(settle)

    assert "left in its journal: the ledger holds this ref with another " \
        "content" in p.stderr
    assert sorted(r[2] for r in balance_txs(settle)) == ["c1", "c2"]
    assert balances(settle)["prepaid:USD:acme"] == 1000001
    assert rc.smembers(bal_key("acme", ":journal")) == {"c1"}
    assert rc.sismember(INDEX, "acme")


def test_bad_buyers_never_block(settle, redis_server):
    rc = redis_server.client
    rc.sadd(INDEX, "a\nb")                       # no reader names it
    balance_op(rc, "a b", "credit", "USD", 5, "c1")   # the ledger cannot
    rc.set(bal_key("typed", ":journal"), "x")    # a journal not a set
    rc.sadd(INDEX, "typed")
    balance_op(rc, "acme", "credit", "USD", 5, "c1")

    p = once(settle)

    assert [r[1] for r in balance_txs(settle)] == ["acme"]
    assert rc.smembers(INDEX) == {"a\nb", "a b", "typed"}
    assert rc.scard(bal_key("a b", ":journal")) == 1
    assert 'buyer "a\\x0ab" left in Redis: not a buyer' in p.stderr
    assert 'buyer "a b" left in Redis: invalid buyer' in p.stderr
    assert 'buyer "typed" left in Redis: toll:balance:{typed}:journal ' \
        'is not of its type' in p.stderr


def test_journal_added_meanwhile_keeps_the_buyer(settle, redis_server):
    """The index is left only with an empty journal: a ref that comes
    after the pass keeps the buyer in the index for the next."""
    rc = redis_server.client
    balance_op(rc, "acme", "credit", "USD", 5, "c1")
    once(settle)
    assert rc.scard(INDEX) == 0
    balance_op(rc, "acme", "credit", "USD", 6, "c2")
    assert rc.smembers(INDEX) == {"acme"}
    once(settle)
    assert rc.scard(INDEX) == 0
    assert balances(settle)["prepaid:USD:acme"] == 11


# ============================================================= 4. usage

def test_usage_split(settle, redis_server):
    rc = redis_server.client
    balance_op(rc, "acme", "credit", "USD", 10000000, "c1")
    # 10 calls at 0.10, of which the balance paid 0.70
    write_prepaid_usage(rc, "acme", "weather", "weather-co", 10, 100000,
                        700000)
    # all of it paid by the balance: no entry of 0 for the buyer
    write_prepaid_usage(rc, "acme", "maps", "maps-co", 2, 100000, 200000)

    once(settle)

    rows = dict((r[0], r[1:]) for r in sql(
        settle, "SELECT service, amount_micros, prepaid_micros, currency"
                " FROM transactions WHERE kind = 'usage'"))
    assert rows == {"weather": (1000000, 700000, "USD"),
                    "maps": (200000, 200000, "USD")}
    b = balances(settle)
    assert b["buyer:acme"] == -300000
    assert b["prepaid:USD:acme"] == 10000000 - 900000
    n = sql(settle, "SELECT count(*) FROM entries e JOIN transactions t"
                    " ON t.id = e.tx_id WHERE t.service = 'maps'")[0][0]
    assert n == 3
    ledger_check(settle.ledger)
    p = tollctl(settle, "ledger", "check")
    assert p.returncode == 0, p.stdout + p.stderr


def test_usage_prepaid_above_amount_quarantined(settle, redis_server):
    rc = redis_server.client
    write_prepaid_usage(rc, "acme", "weather", "weather-co", 1, 100000,
                        100001)
    write_usage(rc, "beta", "weather", "weather-co", calls=1)
    once(settle)
    assert rc.hlen("toll:drain:quarantine") == 1
    assert sql(settle, "SELECT buyer FROM transactions") == [("beta",)]


# ========================================================= 5. reconcile

def reconcile(settle):
    p = tollctl(settle, "--json", "reconcile")
    return p, (json.loads(p.stdout) if p.stdout else None)


def consistent(settle, rc):
    balance_op(rc, "acme", "credit", "USD", 10000000, "c1")
    balance_op(rc, "acme", "debit", "USD", 1000000, "d1")
    write_prepaid_usage(rc, "acme", "weather", "weather-co", 10, 100000,
                        700000)
    once(settle)
    # more after the pass: pending in the journal and in the usage hash
    balance_op(rc, "acme", "credit", "USD", 5000000, "c2")
    balance_op(rc, "acme", "refund", "USD", 500000, "r1")
    write_prepaid_usage(rc, "acme", "weather", "weather-co", 1, 100000,
                        100000)
    balance_op(rc, "beta", "credit", "EUR", 3000000, "c1")


def test_reconcile_consistent(settle, redis_server):
    rc = redis_server.client
    consistent(settle, rc)
    p, r = reconcile(settle)
    assert p.returncode == 0, p.stderr
    assert r["ok"] and r["balances"]["differences"] == 0
    assert r["balances"]["checked"] == 2

    once(settle)
    p, r = reconcile(settle)
    assert p.returncode == 0, p.stderr
    assert r["balances"]["differences"] == 0
    p = tollctl(settle, "reconcile")
    assert p.returncode == 0 and "balances: 2" in p.stdout, p.stdout


def test_reconcile_tampered_balance(settle, redis_server):
    rc = redis_server.client
    consistent(settle, rc)
    rc.hincrby(bal_key("acme"), "USD:available", 1)

    p, r = reconcile(settle)
    assert p.returncode == 65, p.stderr
    assert not r["ok"]
    bad, = r["balances"]["rows_differing"]
    assert (bad["buyer"], bad["currency"]) == ("acme", "USD")
    assert bad["redis_difference_micros"] == -1
    assert bad["ledger_difference_micros"] == 0
    assert "balance" in p.stderr and "differ" in p.stderr


def test_reconcile_ledger_short(settle, redis_server):
    """A ref the journal no longer holds and the ledger never got:
    Redis's invariant holds, the ledger's account does not."""
    rc = redis_server.client
    consistent(settle, rc)
    rc.srem(bal_key("beta", ":journal"), "c1")

    p, r = reconcile(settle)
    assert p.returncode == 65, p.stderr
    bad, = r["balances"]["rows_differing"]
    assert (bad["buyer"], bad["currency"]) == ("beta", "EUR")
    assert bad["redis_difference_micros"] == 0
    assert bad["ledger_difference_micros"] == -3000000
    assert bad["ledger_micros"] == 0 and bad["expected_micros"] == 3000000


def test_reconcile_claims_in_flight(settle, redis_server):
    """A claim not yet posted counts its prepaid part as pending; one
    posted and not yet deleted counts as the ledger's."""
    rc = redis_server.client
    balance_op(rc, "acme", "credit", "USD", 10000000, "c1")
    write_prepaid_usage(rc, "acme", "weather", "weather-co", 10, 100000,
                        700000)

    for step in ("read", "commit"):
        p = settle.once(env={"TOLL_SETTLE_CRASH": step})
        assert "killed after %s" % step in p.stderr
        assert rc.scard("toll:drain:open") == 1
        p, r = reconcile(settle)
        assert p.returncode == 0, (step, p.stdout, p.stderr)
        assert r["balances"]["checked"] == 1

    posted = sql(settle, "SELECT count(*) FROM transactions"
                         " WHERE kind = 'usage'")[0][0]
    assert posted == 1
    once(settle)
    p, r = reconcile(settle)
    assert p.returncode == 0, p.stderr
    assert balances(settle)["prepaid:USD:acme"] == 9300000


def test_reconcile_stuck_records(settle, redis_server):
    """A record toll-settle leaves in a journal (unreadable, or of a buyer
    the ledger cannot name) is not pending: the ledger's difference shows
    the money Redis counted and the ledger never will."""
    rc = redis_server.client
    balance_op(rc, "acme", "credit", "USD", 5, "c1", record="credit USD 5 01")
    balance_op(rc, "a b", "credit", "USD", 7, "c1")
    balance_op(rc, "beta", "credit", "USD", 9, "c1")
    once(settle)

    p, r = reconcile(settle)
    assert p.returncode == 65, p.stderr
    rows = {(x["buyer"], x["currency"]): x
            for x in r["balances"]["rows_differing"]}
    assert set(rows) == {("acme", "USD"), ("a b", "USD")}
    assert rows[("acme", "USD")]["ledger_difference_micros"] == -5
    assert rows[("a b", "USD")]["ledger_difference_micros"] == -7
    assert rows[("acme", "USD")]["redis_difference_micros"] == 0
    assert r["differences"] == 0 and not r["ok"]
