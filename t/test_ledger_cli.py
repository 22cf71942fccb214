"""tollctl's ledger, settlement and reconcile commands
(docs/tollctl.md, "Ledger and settlements").

The ledger is built as in production: usage written into Redis as the
meter writes it, then drained by `toll-settle --once`.  TOLL_LEDGER_NOW
fixes the ledger's clock for both programs, so that usage is posted at a
chosen time and a settlement period can be closed.

    1. help, a missing or broken ledger file
    2. the reference settlement (210 calls at 0.05, 10 % fee: 10.50, 1.05,
       9.45), from one batch and from 210, text and JSON
    3. every refusal of create: overlap, empty, future, bad times, usage
    4. pay once; the second is refused and changes nothing; balances
    5. ledger balance, entries, check (and check of a tampered file)
    6. reconcile: no difference after a drain, with usage pending, with an
       open claim; a difference after tampering; unverifiable rows
    7. a busy ledger
"""

import json
import os
import sqlite3
import subprocess

import pytest

from helpers.settle import preload_env, settle_bin, tollctl_bin, write_usage


T0 = 1772323200                 # 2026-03-01T00:00:00Z
DAY = 86400
HOUR = 3600
POSTED = T0 + 2 * HOUR          # when the drain posts the usage
AFTER = T0 + DAY + HOUR         # when the period [T0, T0 + DAY) is closed
D = "20260301"

REF = {"total_amount": "10.50", "platform_fee": "1.05", "net_amount": "9.45",
       "total_micros": 10500000, "fee_micros": 1050000,
       "net_micros": 9450000, "call_count": 210}

EX_OK, EX_USAGE, EX_DATAERR, EX_NOINPUT = 0, 64, 65, 66
EX_UNAVAILABLE, EX_IOERR, EX_TEMPFAIL = 69, 74, 75


class Ledger:
    """A ledger file, the Redis that feeds it, and the two programs."""

    def __init__(self, redis, path):
        self.redis = redis
        self.rc = redis.client
        self.path = str(path)

    def ctl(self, *args, now=AFTER, env=None, ledger=True, timeout=60):
        argv = [tollctl_bin(), "--redis", self.redis.address]
        if ledger:
            argv += ["--ledger", self.path]
        extra = {"TOLL_LEDGER_NOW": str(now)}
        extra.update(env or {})
        return subprocess.run(argv + list(args), env=preload_env(extra),
                              capture_output=True, text=True,
                              timeout=timeout)

    def ok(self, *args, **kw):
        p = self.ctl(*args, **kw)
        assert p.returncode == 0, (args, p.returncode, p.stderr)
        assert p.stderr == "", p.stderr
        return p.stdout

    def json(self, *args, **kw):
        return json.loads(self.ok("--json", *args, **kw))

    def drain(self, now=POSTED):
        p = subprocess.run([settle_bin(), "--once", "--redis",
                            self.redis.address, "--ledger", self.path],
                           env=preload_env({"TOLL_LEDGER_NOW": str(now)}),
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr

    def reference(self, now=POSTED, buyer="acme"):
        """210 paid calls at 0.05, as the meter flushes them (21 x 10)."""
        for _ in range(21):
            write_usage(self.rc, buyer, "weather", "weather-co", d=D,
                        calls=10, price_micros=50000)
        self.drain(now)

    def sql(self, query, *params):
        db = sqlite3.connect(self.path, timeout=30)
        try:
            return db.execute(query, params).fetchall()
        finally:
            db.close()

    def create(self, provider="weather-co", frm="2026-03-01",
               to="2026-03-02", **kw):
        return self.json("settlement", "create", "--provider", provider,
                         "--from", frm, "--to", to, **kw)


@pytest.fixture
def lg(redis_server, tmp_path):
    return Ledger(redis_server, tmp_path / "ledger.db")


@pytest.fixture
def ref(lg):
    lg.reference()
    return lg


def one_line_error(p, code):
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("tollctl: "), p.stderr
    return lines[0]


def fields(text):
    """The "name: value" lines of a record."""
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        out[name] = value.strip()
    return out


# ============================================== 1. help, the ledger file

def test_help_names_the_commands(lg):
    out = lg.ok("--help", ledger=False)
    for word in ("settlement create", "settlement list", "settlement show",
                 "settlement pay", "ledger balance", "ledger entries",
                 "ledger check", "reconcile", "--ledger PATH",
                 "/var/lib/toll/ledger.db", "TOLL_LEDGER"):
        assert word in out, word
    assert lg.ok("settlement", "--help") == out
    assert lg.ok("ledger", "check", "--help") == out


READERS = (("settlement", "list"), ("settlement", "show", "stl_x"),
           ("ledger", "balance", "platform:fees"), ("ledger", "entries"),
           ("ledger", "check"), ("reconcile",))
WRITERS = (("settlement", "create", "--provider", "p", "--from",
            "2026-03-01", "--to", "2026-03-02"),
           ("settlement", "pay", "stl_x", "--tx", "0xabc"))


@pytest.mark.parametrize("args", READERS + WRITERS)
def test_missing_ledger(lg, args):
    p = lg.ctl(*args)
    line = one_line_error(p, EX_NOINPUT)
    assert ("no ledger at %s: toll-settle creates it on its first run"
            % lg.path) in line
    assert not os.path.exists(lg.path), "tollctl must not create a ledger"
    assert p.stdout == ""


def test_ledger_from_environment(lg, tmp_path):
    lg.reference()
    # TOLL_LEDGER names the file when --ledger is absent; --ledger wins
    out = lg.ok("settlement", "list", ledger=False,
                env={"TOLL_LEDGER": lg.path})
    assert out.startswith("ID ")
    p = lg.ctl("settlement", "list", ledger=False,
               env={"TOLL_LEDGER": str(tmp_path / "nope.db")})
    assert str(tmp_path / "nope.db") in one_line_error(p, EX_NOINPUT)
    lg.ok("settlement", "list", env={"TOLL_LEDGER": str(tmp_path / "x")})


def test_not_a_ledger(lg):
    with open(lg.path, "wb") as f:
        f.write(b"this is not an SQLite file, just bytes" * 100)
    p = lg.ctl("ledger", "check")
    assert "file is not a database" in one_line_error(p, EX_IOERR)

    os.unlink(lg.path)
    sqlite3.connect(lg.path).execute("CREATE TABLE t (x)").connection.close()
    p = lg.ctl("settlement", "list")
    assert "not a toll ledger" in one_line_error(p, EX_NOINPUT)


# ============================================ 2. the reference settlement

def assert_reference(s):
    for k, v in REF.items():
        assert s[k] == v, (k, s[k], v)
    assert s["id"].startswith("stl_") and len(s["id"]) == 28
    int(s["id"][4:], 16)
    assert s["provider_id"] == "weather-co"
    assert s["period_start"] == "2026-03-01T00:00:00Z"
    assert s["period_end"] == "2026-03-02T00:00:00Z"
    assert s["status"] == "pending"
    assert s["payment_tx"] is None and s["paid_at"] is None


def test_reference_settlement(ref):
    p = ref.ctl("settlement", "create", "--provider", "weather-co",
                "--from", "2026-03-01", "--to", "2026-03-02")
    assert p.returncode == 0, p.stderr
    f = fields(p.stdout)
    assert f["total_amount"] == "10.50"
    assert f["platform_fee"] == "1.05"
    assert f["net_amount"] == "9.45"
    assert f["call_count"] == "210"
    assert f["status"] == "pending"
    assert f["payment_tx"] == "-"
    assert f["created_at"] == "2026-03-02T01:00:00Z"
    assert not any(k.endswith("_micros") for k in f)
    sid = f["id"]

    s = ref.json("settlement", "show", sid)
    assert_reference(s)
    assert s["id"] == sid
    # --json may follow the verb, too
    assert json.loads(ref.ok("settlement", "show", sid, "--json")) == s

    # the event that the webhook sender delivers carries the same object
    body, = ref.sql("SELECT body FROM events WHERE type ="
                    " 'settlement.created'")[0]
    assert json.loads(body)["data"] == s

    out = ref.ok("settlement", "list")
    header, row = out.splitlines()
    assert header.split() == ["ID", "PROVIDER", "PERIOD_START", "PERIOD_END",
                              "CALLS", "TOTAL", "FEE", "NET", "STATUS",
                              "PAYMENT_TX"]
    assert row.split() == [sid, "weather-co", "2026-03-01T00:00:00Z",
                           "2026-03-02T00:00:00Z", "210", "10.50", "1.05",
                           "9.45", "pending", "-"]
    assert ref.json("settlement", "list") == [s]


def test_reference_from_210_batches(lg):
    # 210 buyers of one call each: 210 batches, 210 fees of 5000 each
    for i in range(210):
        write_usage(lg.rc, "b%03d" % i, "weather", "weather-co", d=D,
                    calls=1, price_micros=50000)
    lg.drain()
    assert lg.sql("SELECT count(*) FROM batches")[0][0] == 210
    assert_reference(lg.create())


def test_time_forms(ref):
    # a day, its midnight spelled out and unix seconds are the same time
    s = ref.create(frm="2026-03-01T00:00:00Z", to="@%d" % (T0 + DAY))
    assert s["period_start"] == "2026-03-01T00:00:00Z"
    assert s["period_end"] == "2026-03-02T00:00:00Z"
    assert_reference(s)


def test_list_filters(ref):
    write_usage(ref.rc, "acme", "maps", "maps-co", d=D, calls=3)
    ref.drain(now=POSTED + 60)
    a = ref.create(now=AFTER)
    b = ref.create(provider="maps-co", now=AFTER + 60)

    assert [s["id"] for s in ref.json("settlement", "list")] == \
        [b["id"], a["id"]]
    assert ref.json("settlement", "list", "--limit", "1") == [b]
    assert ref.json("settlement", "list", "--provider", "weather-co") == [a]
    assert ref.json("settlement", "list", "--provider", "nobody") == []
    assert ref.json("settlement", "list", "--status", "completed") == []
    assert len(ref.json("settlement", "list", "--status", "pending")) == 2
    assert b["total_amount"] == "0.15" and b["platform_fee"] == "0.015"

    assert ref.ok("settlement", "list", "--provider", "nobody") \
        .splitlines()[0].startswith("ID ")

    for args, code in ((("--status", "paid"), EX_DATAERR),
                       (("--limit", "0"), EX_DATAERR),
                       (("--limit", "1001"), EX_DATAERR),
                       (("--limit", "ten"), EX_DATAERR),
                       (("--provider", "a b"), EX_DATAERR),
                       (("--limit",), EX_USAGE),
                       (("--bogus",), EX_USAGE),
                       (("extra",), EX_USAGE)):
        one_line_error(ref.ctl("settlement", "list", *args), code)


# ================================================== 3. create's refusals

def test_create_refusals(ref):
    first = ref.create()

    def refused(code, *args, now=AFTER):
        p = ref.ctl("settlement", "create", *args, now=now)
        line = one_line_error(p, code)
        assert p.stdout == ""
        return line

    base = ("--provider", "weather-co")
    # overlap: the same period, inside, across either end
    for frm, to in (("2026-03-01", "2026-03-02"),
                    ("2026-03-01T06:00:00Z", "2026-03-01T07:00:00Z"),
                    ("2026-02-28", "2026-03-01T00:00:01Z"),
                    ("2026-03-01T23:59:59Z", "2026-03-03")):
        line = refused(EX_DATAERR, *base, "--from", frm, "--to", to,
                       now=T0 + 3 * DAY)
        assert "overlaps settlement %s" % first["id"] in line

    # empty: nothing posted in the period, or not for this provider
    line = refused(EX_DATAERR, *base, "--from", "2026-03-02", "--to",
                   "2026-03-03", now=T0 + 3 * DAY)
    assert "nothing to settle" in line
    line = refused(EX_DATAERR, "--provider", "nobody", "--from",
                   "2026-03-01", "--to", "2026-03-02")
    assert "nothing to settle" in line

    # the future: the period must have ended
    line = refused(EX_DATAERR, "--provider", "maps-co", "--from",
                   "2026-03-01", "--to", "2026-03-02", now=T0 + DAY - 1)
    assert "after now" in line

    for bad in ("2026-13-01", "2026-02-29", "2026-03-01T24:00:00Z",
                "2026-03-01 00:00:00", "2026-3-1", "yesterday", "@-5",
                "@", "@1e9", "2026-03-01T00:00:00+01:00", ""):
        line = refused(EX_DATAERR, *base, "--from", bad, "--to",
                       "2026-03-02")
        assert "invalid --from" in line
    refused(EX_DATAERR, *base, "--from", "2026-03-02", "--to", "2026-03-02")
    refused(EX_DATAERR, *base, "--from", "2026-03-02", "--to", "2026-03-01")
    refused(EX_DATAERR, "--provider", "weather co", "--from", "2026-03-01",
            "--to", "2026-03-02")

    # usage errors come first
    assert "--provider" in refused(EX_USAGE, "--from", "2026-03-01",
                                   "--to", "2026-03-02")
    assert "--to" in refused(EX_USAGE, *base, "--from", "2026-03-01")
    refused(EX_USAGE, *base, "--from", "2026-03-01", "--to", "2026-03-02",
            "extra")
    refused(EX_USAGE, *base, "--from")

    # nothing of that was written
    assert ref.json("settlement", "list") == [first]
    assert ref.sql("SELECT count(*) FROM events WHERE type ="
                   " 'settlement.created'")[0][0] == 1

    # the period that follows, adjacent to the first, does not overlap
    write_usage(ref.rc, "acme", "weather", "weather-co", d="20260302",
                calls=2)
    ref.drain(now=T0 + DAY + 2 * HOUR)
    s = ref.create(frm="2026-03-02", to="2026-03-03", now=T0 + 2 * DAY)
    assert s["call_count"] == 2 and s["total_amount"] == "0.10"


# ================================================== 4. pay, and balances

def test_pay_once(ref):
    sid = ref.create()["id"]

    p = ref.ctl("settlement", "pay", sid, "--tx", "0xabc", now=AFTER + 60)
    assert p.returncode == 0, p.stderr
    f = fields(p.stdout)
    assert f["status"] == "completed"
    assert f["payment_tx"] == "0xabc"
    assert f["paid_at"] == "2026-03-02T01:01:00Z"
    paid = ref.json("settlement", "show", sid)
    assert paid["status"] == "completed" and paid["payment_tx"] == "0xabc"
    assert paid["net_amount"] == "9.45"

    # the second payment is refused and changes nothing
    p = ref.ctl("settlement", "pay", sid, "--tx", "0xdef", now=AFTER + 120)
    assert one_line_error(p, EX_DATAERR) == (
        'tollctl: settlement %s is already completed (payment_tx "0xabc");'
        ' nothing changed' % sid)
    assert ref.json("settlement", "show", sid) == paid
    assert ref.sql("SELECT count(*) FROM transactions WHERE kind ="
                   " 'payout'")[0][0] == 1
    body, = ref.sql("SELECT body FROM events WHERE type ="
                    " 'settlement.completed'")[0]
    assert json.loads(body)["data"] == paid

    assert ref.json("settlement", "list", "--status", "completed") == [paid]
    assert ref.json("settlement", "list", "--status", "pending") == []

    # balances: owed 9.45 and paid 9.45; cash paid out, nothing collected
    bal = {a: ref.json("ledger", "balance", a)
           for a in ("buyer:acme", "provider:weather-co", "platform:fees",
                     "platform:cash")}
    assert bal["buyer:acme"]["balance"] == "10.50"
    assert bal["provider:weather-co"]["balance"] == "0.00"
    assert bal["provider:weather-co"]["debits"] == "9.45"
    assert bal["provider:weather-co"]["credits"] == "9.45"
    assert bal["platform:fees"]["balance"] == "1.05"
    assert bal["platform:cash"]["balance"] == "-9.45"
    assert bal["platform:cash"]["balance_micros"] == -9450000
    f = fields(ref.ok("ledger", "balance", "platform:cash"))
    assert f["balance"] == "-9.45" and f["normal_side"] == "debit"

    assert "ok" in ref.ok("ledger", "check")


def test_pay_refusals(ref):
    sid = ref.create()["id"]
    for args, code in ((("stl_000000000000000000000000", "--tx", "0x1"),
                        EX_NOINPUT),
                       ((sid,), EX_USAGE),
                       ((sid, "--tx"), EX_USAGE),
                       (("--tx", "0x1"), EX_USAGE),
                       ((sid, "--tx", ""), EX_DATAERR),
                       ((sid, "--tx", "x" * 257), EX_DATAERR),
                       ((sid, "--tx", "0x\x01"), EX_DATAERR),
                       ((sid, "--tx", "caf\u00e9"), EX_DATAERR)):
        p = ref.ctl("settlement", "pay", *args)
        one_line_error(p, code)
    assert ref.json("settlement", "show", sid)["status"] == "pending"

    line = one_line_error(ref.ctl("settlement", "show", "stl_nope"),
                          EX_NOINPUT)
    assert "tollctl settlement list" in line

    # the longest reference is taken
    paid = json.loads(ref.ok("settlement", "pay", sid, "--tx", "y" * 256,
                             "--json"))
    assert paid["payment_tx"] == "y" * 256


def test_net_zero_is_paid_without_entries(lg):
    # fee 100 %: the provider is owed nothing, the payment still recorded
    conf = os.path.join(os.path.dirname(lg.path), "settle.conf")
    with open(conf, "w") as f:
        f.write("provider_fee greedy-co 100%\n")
    write_usage(lg.rc, "acme", "ads", "greedy-co", d=D, calls=3)
    p = subprocess.run([settle_bin(), "-c", conf, "--once", "--redis",
                        lg.redis.address, "--ledger", lg.path],
                       env=preload_env({"TOLL_LEDGER_NOW": str(POSTED)}),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    s = lg.create(provider="greedy-co")
    assert (s["total_amount"], s["platform_fee"], s["net_amount"]) == \
        ("0.15", "0.15", "0.00")
    paid = lg.json("settlement", "pay", s["id"], "--tx", "none")
    assert paid["status"] == "completed"
    assert lg.ok("ledger", "check").rstrip().endswith("ok")


# ====================================================== 5. ledger verbs

def test_ledger_balance(ref):
    b = ref.json("ledger", "balance", "provider:weather-co")
    assert b["account"] == "provider:weather-co"
    assert b["kind"] == "provider" and b["normal_side"] == "credit"
    assert (b["balance"], b["debits"], b["credits"]) == \
        ("9.45", "0.00", "9.45")
    assert b["balance_micros"] == 9450000
    f = fields(ref.ok("ledger", "balance", "buyer:acme"))
    assert f["balance"] == "10.50" and f["normal_side"] == "debit"

    line = one_line_error(ref.ctl("ledger", "balance", "buyer:nobody"),
                          EX_NOINPUT)
    assert 'no account "buyer:nobody"' in line
    # no payout yet: platform:cash was never posted to
    one_line_error(ref.ctl("ledger", "balance", "platform:cash"), EX_NOINPUT)
    for bad in ("buyer:", "acme", "x:y", "platform:other", "buyer:a b"):
        line = one_line_error(ref.ctl("ledger", "balance", bad), EX_DATAERR)
        assert "buyer:ID, provider:ID, platform:fees or platform:cash" \
            in line
    one_line_error(ref.ctl("ledger", "balance"), EX_USAGE)


def test_ledger_entries(ref):
    write_usage(ref.rc, "beta", "maps", "maps-co", d=D, calls=1)
    ref.drain(now=POSTED + 1)

    every = ref.json("ledger", "entries")
    assert len(every) == 6
    assert [e["entry"] for e in every] == sorted(
        (e["entry"] for e in every), reverse=True)
    assert sum(e["debit_micros"] for e in every) == \
        sum(e["credit_micros"] for e in every) == 10550000

    two = ref.json("ledger", "entries", "--limit", "2")
    assert two == every[:2]

    mine = ref.json("ledger", "entries", "--account", "provider:weather-co")
    assert [e["account"] for e in mine] == ["provider:weather-co"]
    assert mine[0]["credit"] == "9.45" and mine[0]["buyer"] == "acme"

    out = ref.ok("ledger", "entries", "--account", "buyer:acme")
    header, row = out.splitlines()
    assert header.split() == ["ENTRY", "TX", "POSTED_AT", "KIND", "ACCOUNT",
                              "DEBIT", "CREDIT", "REF"]
    assert row.split()[2:] == ["2026-03-01T02:00:00Z", "usage",
                               "buyer:acme", "10.50", "-", "acme", D,
                               "weather"]

    one_line_error(ref.ctl("ledger", "entries", "--account", "buyer:zed"),
                   EX_NOINPUT)
    one_line_error(ref.ctl("ledger", "entries", "--account", "zed"),
                   EX_DATAERR)
    one_line_error(ref.ctl("ledger", "entries", "--limit", "-1"), EX_DATAERR)
    one_line_error(ref.ctl("ledger", "entries", "x"), EX_USAGE)


def test_ledger_check(ref):
    sid = ref.create()["id"]
    ref.ok("settlement", "pay", sid, "--tx", "0xabc")

    out = ref.ok("ledger", "check")
    assert all(line.startswith("ok ") for line in out.splitlines()[:-1])
    assert out.splitlines()[-1].endswith(": ok")
    report = ref.json("ledger", "check")
    assert report["ok"] is True
    assert report["debits_micros"] == report["credits_micros"] == \
        10500000 + 9450000

    # tamper: the immutability trigger dropped, one entry changed
    db = sqlite3.connect(ref.path)
    db.execute("DROP TRIGGER entries_no_update")
    db.execute("UPDATE entries SET credit_micros = credit_micros + 1"
               " WHERE id = (SELECT min(id) FROM entries"
               " WHERE credit_micros > 0)")
    db.commit()
    db.close()

    p = ref.ctl("ledger", "check")
    line = one_line_error(p, EX_DATAERR)
    assert "transactions_balanced" in line and "debits_equal_credits" in line
    assert "FAIL  transactions_balanced" in p.stdout
    assert p.stdout.splitlines()[-1].endswith("FAILED")

    p = ref.ctl("--json", "ledger", "check")
    one_line_error(p, EX_DATAERR)
    report = json.loads(p.stdout)
    assert report["ok"] is False
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert {"transactions_balanced", "debits_equal_credits",
            "totals_match_entries"} <= failed


def test_ledger_check_settlement_tampered(ref):
    sid = ref.create()["id"]
    db = sqlite3.connect(ref.path)
    db.execute("UPDATE settlements SET total_micros = total_micros + 1,"
               " net_micros = net_micros + 1 WHERE id = ?", (sid,))
    db.commit()
    db.close()
    p = ref.ctl("ledger", "check")
    assert "settlements_match" in one_line_error(p, EX_DATAERR)


# ========================================================= 6. reconcile

def reconcile(lg, code=EX_OK):
    p = lg.ctl("--json", "reconcile")
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout)


def test_reconcile(ref):
    mirror = "toll:usage:{acme}:%s:drained" % D

    out = ref.ok("reconcile")
    assert "differences: 0" in out
    r = reconcile(ref)
    assert r["ok"] is True and r["differences"] == 0 and r["rows"] == 1
    assert r["recorded"]["calls"] == r["ledger"]["calls"] == 210
    assert r["recorded"]["amount_micros"] == 10500000
    assert r["ledger"]["amount"] == "10.50"
    assert r["pending"]["calls"] == 0

    # usage not drained yet: recorded and pending alike
    write_usage(ref.rc, "acme", "weather", "weather-co", d=D, calls=4,
                free=1)
    write_usage(ref.rc, "org:team}x", "maps", "maps-co", d="20260302",
                calls=2)
    r = reconcile(ref)
    assert r["differences"] == 0 and r["rows"] == 2
    assert r["pending"]["calls"] == 6 and r["pending"]["free_calls"] == 1
    assert r["recorded"]["calls"] == 216
    assert r["pending"]["amount_micros"] == 250000

    # a claim taken and not yet posted (a crash before the commit)
    claim = "toll:drain:{acme}:%s:%s" % (D, "ab" * 16)
    ref.rc.hset(claim, mapping={"weather:calls": 5, "weather:paid_calls": 5,
                                "weather:amount_micros": 250000,
                                "weather:provider": "weather-co"})
    ref.rc.sadd("toll:drain:open", claim)
    for f, v in (("calls", 5), ("paid_calls", 5), ("amount_micros", 250000)):
        ref.rc.hincrby(mirror, "weather:" + f, v)
    r = reconcile(ref)
    assert r["differences"] == 0 and r["pending"]["calls"] == 11

    # the drain posts everything: still no difference, nothing pending
    ref.drain(now=POSTED + 60)
    r = reconcile(ref)
    assert r["differences"] == 0
    assert r["pending"]["calls"] == 0 and r["ledger"]["calls"] == 221
    assert ref.rc.scard("toll:drain:open") == 0

    # tampering: the mirror says one call more than the ledger holds
    ref.rc.hincrby(mirror, "weather:calls", 1)
    ref.rc.hincrby(mirror, "weather:amount_micros", 50000)
    p = ref.ctl("reconcile")
    line = one_line_error(p, EX_DATAERR)
    assert "1 row of usage differs" in line
    assert "differences: 1" in p.stdout
    row = p.stdout.splitlines()[-1].split()
    assert row == ["acme", D, "weather", "+1", "0", "0", "+0.05"]

    r = reconcile(ref, EX_DATAERR)
    assert r["ok"] is False and r["differences"] == 1
    d, = r["rows_differing"]
    assert (d["buyer"], d["day"], d["service"]) == ("acme", D, "weather")
    assert d["difference"]["calls"] == 1
    assert d["difference"]["amount_micros"] == 50000
    assert d["recorded"]["calls"] == d["ledger"]["calls"] + 1

    # a ledger row missing from the mirror is a difference the other way
    ref.rc.hincrby(mirror, "weather:calls", -2)
    r = reconcile(ref, EX_DATAERR)
    assert r["rows_differing"][0]["difference"]["calls"] == -1


def test_reconcile_unverifiable(ref):
    # the mirror is kept 35 days; past that the ledger's rows are unchecked
    ref.rc.delete("toll:usage:{acme}:%s:drained" % D)
    r = reconcile(ref)
    assert r["ok"] is True and r["rows"] == 0 and r["unverifiable"] == 1
    assert r["unverifiable_ledger"]["calls"] == 210
    assert "1 unverifiable" in ref.ok("reconcile")


def test_reconcile_claim_posted_not_deleted(ref):
    # a crash after the commit: the claim is still in Redis, its batch is
    # in the ledger; it counts once, as the ledger's
    (batch, claim), = ref.sql("SELECT id, claim FROM batches")
    ref.rc.hset(claim, mapping={"weather:calls": 210,
                                "weather:paid_calls": 210,
                                "weather:amount_micros": 10500000})
    ref.rc.sadd("toll:drain:open", claim)
    assert claim.endswith(batch)
    r = reconcile(ref)
    assert r["differences"] == 0 and r["pending"]["calls"] == 0
    assert r["ledger"]["calls"] == 210


def test_reconcile_claim_in_flight(ref):
    # a claim announced in toll:drain:open, its key not there yet and its
    # batch not posted: toll-settle is between its SADD and its RENAME, so
    # a difference may be in flight.  Read 3 times, then ask to run again.
    ref.rc.sadd("toll:drain:open", "toll:drain:{acme}:%s:%s" % (D, "cd" * 16))
    assert reconcile(ref)["differences"] == 0

    ref.rc.hincrby("toll:usage:{acme}:%s:drained" % D, "weather:calls", 1)
    p = ref.ctl("reconcile")
    line = one_line_error(p, EX_TEMPFAIL)
    assert "toll-settle drained while reconcile read" in line
    assert "differences: 1" in p.stdout
    r = reconcile(ref, EX_TEMPFAIL)
    assert r["attempts"] == 3 and r["differences"] == 1

    # toll-settle finishes (forgets the claim): a plain difference again
    ref.rc.delete("toll:drain:open")
    r = reconcile(ref, EX_DATAERR)
    assert r["attempts"] == 1


def test_reconcile_bad_data_and_errors(ref, tmp_path):
    ref.rc.hset("toll:usage:{acme}:%s" % D, "weather:calls", "1.5")
    line = one_line_error(ref.ctl("reconcile"), EX_DATAERR)
    assert "not a count" in line and "weather:calls" in line
    ref.rc.delete("toll:usage:{acme}:%s" % D)

    # names that only look like usage are not read
    ref.rc.set("toll:usage:{acme}:notaday", "x")
    ref.rc.sadd("toll:usage:{acme}:days", D)
    assert reconcile(ref)["differences"] == 0

    p = subprocess.run([tollctl_bin(), "--redis", "127.0.0.1:1",
                        "--ledger", ref.path, "reconcile"],
                       env=preload_env(), capture_output=True, text=True,
                       timeout=30)
    one_line_error(p, EX_UNAVAILABLE)
    one_line_error(ref.ctl("reconcile", "extra"), EX_USAGE)


# ========================================================= 7. busy ledger

def test_busy_ledger(ref):
    # another writer holds the lock past the busy timeout (10 s)
    db = sqlite3.connect(ref.path, isolation_level=None, timeout=30)
    db.execute("BEGIN IMMEDIATE")
    try:
        p = ref.ctl("settlement", "create", "--provider", "weather-co",
                    "--from", "2026-03-01", "--to", "2026-03-02")
        line = one_line_error(p, EX_TEMPFAIL)
        assert "busy" in line and "run again" in line
        # readers are not held up by a writer
        assert ref.json("settlement", "list") == []
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert_reference(ref.create())
