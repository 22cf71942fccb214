"""tollctl balance credit | debit | refund | show (docs/tollctl.md,
"Balances"; docs/metering.md, "Prepaid balances").

Against a real redis-server and the built tollctl:

    1. every bad input refused with its code, one line, and nothing sent
       to Redis (no connection opened, the keyspace unchanged)
    2. the movements: the hash, the refs, the journal and the index as
       docs/redis.md lays them out; credit, debit and refund as show
       prints them, consistent
    3. a ref once: the same movement again prints what the first wrote
       ("existing"), another movement under it is refused
    4. refusals by the script: a take above what is available (held
       money cannot be taken), a total past INT64_MAX
    5. ten processes at once: one ref credits once, ten refs all credit
    6. show: holds, several currencies, --currency, a damaged hash
    7. Redis down or refusing: 69
"""

import json
import subprocess

import pytest

from helpers.faults import Faults, fault_lines
from helpers.settle import preload_env, tollctl_bin


EX_OK, EX_USAGE, EX_DATAERR, EX_UNAVAILABLE = 0, 64, 65, 69

INT64_MAX = 2 ** 63 - 1
MAX_AMOUNT = "9223372036854.775807"        # INT64_MAX micro-units

B = "acme"
BAL = "toll:balance:{acme}"
REFS = BAL + ":refs"
JOURNAL = BAL + ":journal"
INDEX = "toll:balance:index"


class Ctl:
    """tollctl against the test's Redis."""

    def __init__(self, redis):
        self.redis = redis
        self.rc = redis.client

    def argv(self, *args):
        return [tollctl_bin(), "--redis", self.redis.address] + list(args)

    def run(self, *args):
        return subprocess.run(self.argv(*args), env=preload_env(),
                              capture_output=True, text=True, timeout=60)

    def ok(self, *args):
        p = self.run(*args)
        assert p.returncode == EX_OK, (args, p.returncode, p.stderr)
        assert p.stderr == "", p.stderr
        lines = p.stdout.splitlines()
        assert len(lines) == 1, p.stdout
        return json.loads(lines[0])

    def move(self, kind, amount, ref, buyer=B, currency=None):
        args = ["balance", kind, buyer, amount, "--ref", ref]
        if currency is not None:
            args += ["--currency", currency]
        return self.ok(*args)

    def show(self, buyer=B, *extra):
        return self.ok("balance", "show", buyer, *extra)

    def dump(self):
        """Every key, its type and its whole value."""
        out = {}
        for k in self.rc.scan_iter(count=1000):
            t = self.rc.type(k)
            if t == "hash":
                v = self.rc.hgetall(k)
            elif t == "set":
                v = sorted(self.rc.smembers(k))
            elif t == "string":
                v = self.rc.get(k)
            else:
                v = t
            out[k] = (t, v)
        return out

    def connections(self):
        return int(self.rc.info("stats")["total_connections_received"])


@pytest.fixture
def ctl(redis_server):
    return Ctl(redis_server)


def one_line_error(p, code):
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("tollctl: "), p.stderr
    assert p.stdout == ""
    return lines[0]


def refused_unchanged(ctl, args, code, says):
    """args refused with code, the line holding says; Redis untouched."""
    before, conns = ctl.dump(), ctl.connections()
    line = one_line_error(ctl.run(*args), code)
    assert says in line, line
    assert ctl.connections() == conns, "tollctl must not contact Redis"
    assert ctl.dump() == before
    return line


def balance(ctl, currency="USD", buyer=B):
    for b in ctl.show(buyer)["balances"]:
        if b["currency"] == currency:
            return b
    return None


# ========================================== 1. bad input: nothing is sent

KINDS = ("credit", "debit", "refund")

BAD = [
    # (arguments after the kind, exit code, what the line says)
    (["acme", "5"], EX_USAGE, "needs --ref"),
    (["acme", "--ref", "r1"], EX_USAGE, "needs a BUYER and an AMOUNT"),
    (["--ref", "r1"], EX_USAGE, "needs a BUYER and an AMOUNT"),
    (["acme", "5", "extra", "--ref", "r1"], EX_USAGE, "unexpected argument"),
    (["acme", "5", "--ref"], EX_USAGE, "needs a value"),
    (["acme", "-5", "--ref", "r1"], EX_USAGE, "unknown option \"-5\""),
    (["acme", "5", "--ref", "r1", "--owner", "x"], EX_USAGE,
     "unknown or ambiguous option"),
    # the ref
    (["acme", "5", "--ref", ""], EX_DATAERR, "invalid --ref"),
    (["acme", "5", "--ref", "r" * 129], EX_DATAERR, "invalid --ref"),
    (["acme", "5", "--ref", "pay 1"], EX_DATAERR, "invalid --ref"),
    (["acme", "5", "--ref", "pay*1"], EX_DATAERR, "invalid --ref"),
    (["acme", "5", "--ref", "pay\n1"], EX_DATAERR, "invalid --ref"),
    (["acme", "5", "--ref", "pay\u00e91"], EX_DATAERR, "invalid --ref"),
    (["acme", "5", "--ref", "{r}"], EX_DATAERR, "invalid --ref"),
    # the buyer: a key's owner
    (["a b", "5", "--ref", "r1"], EX_DATAERR, "invalid BUYER"),
    (["", "5", "--ref", "r1"], EX_DATAERR, "invalid BUYER"),
    (["b" * 129, "5", "--ref", "r1"], EX_DATAERR, "invalid BUYER"),
    (["ac\x7fme", "5", "--ref", "r1"], EX_DATAERR, "invalid BUYER"),
    (["acm\u00e9", "5", "--ref", "r1"], EX_DATAERR, "invalid BUYER"),
    # the amount
    (["--ref", "r1", "acme", "--", "-5"], EX_DATAERR, "is negative"),
    (["acme", "0", "--ref", "r1"], EX_DATAERR, "must be more than 0"),
    (["acme", "0.000000", "--ref", "r1"], EX_DATAERR, "must be more than 0"),
    (["acme", "1.0000001", "--ref", "r1"], EX_DATAERR,
     "has more than 6 decimal places"),
    (["acme", "0.0000010", "--ref", "r1"], EX_DATAERR,
     "has more than 6 decimal places"),
    (["acme", "abc", "--ref", "r1"], EX_DATAERR, "is not a decimal number"),
    (["acme", "1e3", "--ref", "r1"], EX_DATAERR, "is not a decimal number"),
    (["acme", "1,5", "--ref", "r1"], EX_DATAERR, "is not a decimal number"),
    (["acme", " 5", "--ref", "r1"], EX_DATAERR, "is not a decimal number"),
    (["acme", "5.", "--ref", "r1"], EX_DATAERR, "is not a decimal number"),
    (["acme", "", "--ref", "r1"], EX_DATAERR, "is empty"),
    (["acme", "9223372036854.775808", "--ref", "r1"], EX_DATAERR,
     "is more than 9223372036854.775807"),
    (["acme", "99999999999999999999", "--ref", "r1"], EX_DATAERR,
     "is more than 9223372036854.775807"),
    # the currency
    (["acme", "5", "--ref", "r1", "--currency", "usd"], EX_DATAERR,
     "unknown currency"),
    (["acme", "5", "--ref", "r1", "--currency", "US"], EX_DATAERR,
     "unknown currency"),
    (["acme", "5", "--ref", "r1", "--currency", ""], EX_DATAERR,
     "unknown currency"),
    (["acme", "5", "--ref", "r1", "--currency", "1USD"], EX_DATAERR,
     "unknown currency"),
    (["acme", "5", "--ref", "r1", "--currency", "U" * 17], EX_DATAERR,
     "unknown currency"),
    (["acme", "5", "--ref", "r1", "--currency", "US:D"], EX_DATAERR,
     "unknown currency"),
]


@pytest.fixture
def seeded(ctl):
    """A buyer with a balance, so that "unchanged" has something to keep."""
    ctl.move("credit", "10", "seed")
    return ctl


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("args,code,says", BAD,
                         ids=[str(i) for i in range(len(BAD))])
def test_bad_input_sends_nothing(seeded, kind, args, code, says):
    line = refused_unchanged(seeded, ["balance", kind] + args, code, says)
    if code == EX_USAGE:
        assert line.endswith("see 'tollctl --help'"), line


SHOW_BAD = [
    (["a b"], EX_DATAERR, "invalid BUYER"),
    (["acme", "--currency", "usd"], EX_DATAERR, "unknown currency"),
    ([], EX_USAGE, "needs a BUYER"),
    (["acme", "more"], EX_USAGE, "unexpected argument"),
    (["acme", "--ref", "r1"], EX_USAGE, "unknown or ambiguous option"),
]


@pytest.mark.parametrize("args,code,says", SHOW_BAD)
def test_show_bad_input_sends_nothing(seeded, args, code, says):
    refused_unchanged(seeded, ["balance", "show"] + args, code, says)


def test_a_bad_value_is_not_echoed_raw(seeded):
    # a control byte in a refused value stays on its one line
    line = refused_unchanged(seeded, ["balance", "credit", "acme", "5\n6",
                                      "--ref", "r1"], EX_DATAERR,
                             "invalid AMOUNT")
    assert "\\x0a" in line, line


def test_help_names_the_verbs(ctl):
    p = ctl.run("--help")
    assert p.returncode == 0
    for word in ("balance credit BUYER AMOUNT [--currency CUR] --ref REF",
                 "balance debit", "balance refund",
                 "balance show BUYER [--currency CUR]"):
        assert word in p.stdout, word
    assert ctl.run("balance", "--help").stdout == p.stdout


# ====================================================== 2. the movements

def test_credit_writes_the_layout(ctl):
    out = ctl.move("credit", "10.50", "pay-1")
    assert out == {"ref": "pay-1", "kind": "credit", "buyer": B,
                   "currency": "USD", "amount": "10.5",
                   "created_at": out["created_at"], "existing": False}
    t = out["created_at"]
    assert isinstance(t, int) and abs(t - int(ctl.rc.time()[0])) <= 5

    assert ctl.rc.hgetall(BAL) == {"USD:available": "10500000",
                                   "USD:credits": "10500000"}
    assert ctl.rc.hgetall(REFS) == {"pay-1": "credit USD 10500000 %d" % t}
    assert ctl.rc.smembers(JOURNAL) == {"pay-1"}
    assert ctl.rc.smembers(INDEX) == {B}
    # nothing else: no TTL either, the refs are kept forever
    assert sorted(ctl.rc.keys()) == sorted([BAL, REFS, JOURNAL, INDEX])
    for k in (BAL, REFS, JOURNAL, INDEX):
        assert ctl.rc.ttl(k) == -1


def test_debit_and_refund_take_from_available(ctl):
    ctl.move("credit", "10.50", "c1")
    d = ctl.move("debit", "2.25", "d1")
    r = ctl.move("refund", "1.25", "r1")
    assert (d["kind"], d["amount"]) == ("debit", "2.25")
    assert (r["kind"], r["amount"]) == ("refund", "1.25")

    assert ctl.rc.hgetall(BAL) == {"USD:available": "7000000",
                                   "USD:credits": "10500000",
                                   "USD:debits": "3500000"}
    refs = ctl.rc.hgetall(REFS)
    assert refs["d1"].startswith("debit USD 2250000 ")
    assert refs["r1"].startswith("refund USD 1250000 ")
    assert ctl.rc.smembers(JOURNAL) == {"c1", "d1", "r1"}

    b = balance(ctl)
    assert b == {"currency": "USD", "balance": "7", "available": "7",
                 "held": "0", "spent": "0", "credits": "10.5",
                 "debits": "3.5", "consistent": True, "holds": []}


def test_all_of_it_may_be_taken(ctl):
    ctl.move("credit", "5", "c1")
    ctl.move("refund", "5", "r1")
    b = balance(ctl)
    assert (b["available"], b["balance"], b["consistent"]) == ("0", "0",
                                                               True)


def test_currencies_are_apart(ctl):
    ctl.move("credit", "3", "e1", currency="EUR")
    ctl.move("credit", "1", "u1")
    ctl.move("credit", "0.000001", "c1", currency="USDC")
    # a EUR balance does not pay a USD debit
    p = ctl.run("balance", "debit", B, "2", "--ref", "u2")
    assert "only 1 USD is available" in one_line_error(p, EX_DATAERR)

    s = ctl.show()
    assert [b["currency"] for b in s["balances"]] == ["EUR", "USD", "USDC"]
    assert [b["available"] for b in s["balances"]] == ["3", "1", "0.000001"]
    assert all(b["consistent"] for b in s["balances"])

    s = ctl.show(B, "--currency", "EUR")
    assert [b["currency"] for b in s["balances"]] == ["EUR"]
    assert ctl.show(B, "--currency", "GBP") == {"buyer": B, "balances": []}


def test_buyers_are_apart(ctl):
    # a buyer may hold ':' and '}' (a key's owner); its name is tagged
    odd = "x}:{y@example.com"
    ctl.move("credit", "2", "same-ref", buyer=odd)
    ctl.move("credit", "3", "same-ref")
    assert ctl.rc.hget("toll:balance:{%s}" % odd, "USD:credits") == "2000000"
    assert ctl.rc.hget(BAL, "USD:credits") == "3000000"
    assert ctl.rc.smembers(INDEX) == {B, odd}
    assert balance(ctl, buyer=odd)["available"] == "2"


def test_longest_ref_and_buyer(ctl):
    ref = "aZ09._:@/+=-" + "r" * 116
    buyer = "b" * 128
    assert len(ref) == 128
    out = ctl.move("credit", "1", ref, buyer=buyer)
    assert (out["ref"], out["buyer"]) == (ref, buyer)
    assert ctl.rc.hexists("toll:balance:{%s}:refs" % buyer, ref)


def test_unknown_buyer_shows_nothing(ctl):
    assert ctl.show("nobody") == {"buyer": "nobody", "balances": []}
    assert ctl.dump() == {}


# ================================================= 3. a ref, used once

def test_same_movement_again_is_existing(ctl):
    first = ctl.move("credit", "10.50", "pay-1")
    before = ctl.dump()
    again = ctl.move("credit", "10.5", "pay-1")
    assert again == dict(first, existing=True)
    assert ctl.dump() == before
    assert ctl.rc.hget(BAL, "USD:credits") == "10500000"


def test_retry_of_a_take_after_the_balance_went(ctl):
    ctl.move("credit", "5", "c1")
    first = ctl.move("debit", "5", "d1")
    # the balance is 0 now: the retry is answered by its ref, not refused
    assert ctl.move("debit", "5", "d1") == dict(first, existing=True)
    assert ctl.rc.hget(BAL, "USD:debits") == "5000000"


@pytest.mark.parametrize("args", [
    ["credit", B, "10", "--ref", "pay-1"],
    ["debit", B, "10.5", "--ref", "pay-1"],
    ["refund", B, "10.5", "--ref", "pay-1"],
    ["credit", B, "10.5", "--ref", "pay-1", "--currency", "EUR"],
    ["credit", B, "10.500001", "--ref", "pay-1"],
])
def test_same_ref_other_movement_refused(ctl, args):
    ctl.move("credit", "10.50", "pay-1")
    ctl.move("debit", "1", "d1")
    before = ctl.dump()
    line = one_line_error(ctl.run("balance", *args), EX_DATAERR)
    assert 'ref "pay-1" was already used for credit 10.5 USD' in line, line
    assert "nothing written" in line
    assert ctl.dump() == before


def test_a_ref_is_per_buyer(ctl):
    ctl.move("credit", "1", "r1")
    out = ctl.move("credit", "1", "r1", buyer="other")
    assert out["existing"] is False


def test_damaged_record_under_the_ref(ctl):
    ctl.move("credit", "1", "c1")
    ctl.rc.hset(REFS, "r1", "something else")
    before = ctl.dump()
    p = ctl.run("balance", "credit", B, "1", "--ref", "r1")
    line = one_line_error(p, EX_DATAERR)
    assert 'ref "r1" was already used (its record reads "something else")' \
        in line, line
    assert ctl.dump() == before


# ==================================== 4. refusals by the script, nothing written

def test_take_above_available_refused(ctl):
    ctl.move("credit", "5", "c1")
    for kind in ("debit", "refund"):
        before = ctl.dump()
        p = ctl.run("balance", kind, B, "5.000001", "--ref", "big")
        line = one_line_error(p, EX_DATAERR)
        assert "only 5 USD is available" in line, line
        assert "nothing written" in line
        assert ctl.dump() == before
    # the refused ref was not spent
    assert ctl.move("debit", "5", "big")["existing"] is False


def test_take_from_nothing_refused(ctl):
    p = ctl.run("balance", "debit", "nobody", "1", "--ref", "d1")
    assert "only 0 USD is available" in one_line_error(p, EX_DATAERR)
    # the buyer's own keys stay unwritten
    assert ctl.rc.keys("toll:balance:{nobody}*") == []


def test_held_money_cannot_be_taken(ctl):
    ctl.move("credit", "10", "c1")
    # a node leases 4 as lua/prepaid.lua does: available -> its hold
    ctl.rc.hincrby(BAL, "USD:available", -4000000)
    ctl.rc.hincrby(BAL, "USD:held", 4000000)
    ctl.rc.hincrby(BAL, "USD:hold:0a1b2c", 4000000)
    ctl.rc.hset(BAL, "USD:seen:0a1b2c", "1764547200")
    before = ctl.dump()

    p = ctl.run("balance", "refund", B, "7", "--ref", "r1")
    line = one_line_error(p, EX_DATAERR)
    assert "only 6 USD is available" in line, line
    assert "what nodes hold and what was spent cannot be taken" in line
    assert ctl.dump() == before

    ctl.move("refund", "6", "r1")
    b = balance(ctl)
    assert b == {"currency": "USD", "balance": "4", "available": "0",
                 "held": "4", "spent": "0", "credits": "10", "debits": "6",
                 "consistent": True,
                 "holds": [{"node": "0a1b2c", "amount": "4",
                            "seen": 1764547200}]}


def test_credit_past_int64_refused(ctl):
    out = ctl.move("credit", MAX_AMOUNT, "max")
    assert out["amount"] == MAX_AMOUNT
    assert ctl.rc.hget(BAL, "USD:credits") == str(INT64_MAX)
    before = ctl.dump()
    p = ctl.run("balance", "credit", B, "0.000001", "--ref", "one-more")
    line = one_line_error(p, EX_DATAERR)
    assert "credit of 0.000001 USD to acme refused" in line, line
    assert "USD:credits, %s, would pass" % MAX_AMOUNT in line, line
    assert ctl.dump() == before
    b = balance(ctl)
    assert (b["balance"], b["credits"], b["consistent"]) == (MAX_AMOUNT,
                                                             MAX_AMOUNT, True)


def test_credit_to_exactly_int64_max(ctl):
    ctl.move("credit", "9223372036853.775807", "a")
    ctl.move("credit", "1", "b")
    assert ctl.rc.hget(BAL, "USD:credits") == str(INT64_MAX)
    p = ctl.run("balance", "credit", B, "0.000001", "--ref", "c")
    one_line_error(p, EX_DATAERR)


# ============================================== 5. ten processes at once

N = 10


def run_all(ctl, argvs):
    procs = [subprocess.Popen(ctl.argv(*a), env=preload_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for a in argvs]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        out.append((p.returncode, stdout, stderr))
    return out


def test_one_ref_from_ten_processes_credits_once(ctl):
    res = run_all(ctl, [["balance", "credit", B, "2.5", "--ref", "race"]]
                  * N)
    assert all(rc == 0 and err == "" for rc, _, err in res), res
    outs = [json.loads(o) for _, o, _ in res]
    assert sorted(o["existing"] for o in outs) == [False] + [True] * (N - 1)
    assert len({o["created_at"] for o in outs}) == 1
    assert ctl.rc.hget(BAL, "USD:credits") == "2500000"
    assert ctl.rc.hget(BAL, "USD:available") == "2500000"
    assert list(ctl.rc.hgetall(REFS)) == ["race"]
    assert ctl.rc.smembers(JOURNAL) == {"race"}
    assert balance(ctl)["consistent"] is True


def test_ten_refs_from_ten_processes_all_credit(ctl):
    res = run_all(ctl, [["balance", "credit", B, "0.333333", "--ref",
                         "ref-%d" % i] for i in range(N)])
    assert all(rc == 0 for rc, _, _ in res), res
    assert all(json.loads(o)["existing"] is False for _, o, _ in res)
    assert ctl.rc.hget(BAL, "USD:credits") == str(333333 * N)
    assert ctl.rc.hlen(REFS) == N
    assert ctl.rc.scard(JOURNAL) == N


def test_ten_takes_at_once_never_below_zero(ctl):
    ctl.move("credit", "3", "c1")
    res = run_all(ctl, [["balance", "debit", B, "1", "--ref", "d-%d" % i]
                        for i in range(N)])
    codes = sorted(rc for rc, _, _ in res)
    assert codes == [0] * 3 + [EX_DATAERR] * (N - 3), res
    b = balance(ctl)
    assert (b["available"], b["debits"], b["consistent"]) == ("0", "3",
                                                              True)


# ============================================================= 6. show

def test_show_holds_sorted_by_node(ctl):
    ctl.move("credit", "10", "c1")
    ctl.rc.hincrby(BAL, "USD:available", -1500000)
    ctl.rc.hincrby(BAL, "USD:held", 1000000)
    ctl.rc.hincrby(BAL, "USD:spent", 500000)
    ctl.rc.hset(BAL, mapping={"USD:hold:ff01": "600000",
                              "USD:hold:0a02": "400000",
                              "USD:seen:0a02": "1764547200",
                              "USD:seen:77aa": "1764547100"})
    b = balance(ctl)
    assert b["balance"] == "9.5"
    assert (b["available"], b["held"], b["spent"]) == ("8.5", "1", "0.5")
    assert b["consistent"] is True
    assert b["holds"] == [
        {"node": "0a02", "amount": "0.4", "seen": 1764547200},
        {"node": "77aa", "amount": "0", "seen": 1764547100},
        {"node": "ff01", "amount": "0.6", "seen": None}]


def test_show_inconsistent(ctl):
    ctl.move("credit", "10", "c1")
    ctl.rc.hincrby(BAL, "USD:available", 1)
    b = balance(ctl)
    assert (b["available"], b["consistent"]) == ("10.000001", False)


def test_show_negative_available(ctl):
    # a node cut off for long spends what was reclaimed: the one way a
    # balance goes below zero (docs/metering.md), still consistent
    ctl.move("credit", "1", "c1")
    ctl.rc.hincrby(BAL, "USD:available", -3000000)
    ctl.rc.hincrby(BAL, "USD:spent", 3000000)
    b = balance(ctl)
    assert (b["available"], b["balance"], b["consistent"]) == ("-2", "-2",
                                                               True)


def test_show_overflowing_sums_are_not_consistent(ctl):
    ctl.rc.hset(BAL, mapping={"USD:credits": str(INT64_MAX),
                              "USD:debits": str(-2 ** 63),
                              "USD:available": "0"})
    assert balance(ctl)["consistent"] is False


@pytest.mark.parametrize("field,value,says", [
    ("USD:spent", "abc", 'field "USD:spent" holds "abc", not an int64'),
    ("USD:spent", "1.5", 'field "USD:spent" holds "1.5", not an int64'),
    ("USD:held", "9223372036854775808", 'field "USD:held" holds'),
    ("USD:seen:0a", "", 'field "USD:seen:0a" holds ""'),
    ("USD:foo", "1", 'field "USD:foo" is not a balance\'s'),
    ("usd:available", "1", 'field "usd:available" is not a balance\'s'),
    ("available", "1", 'field "available" is not a balance\'s'),
    ("USD:hold:", "1", 'field "USD:hold:" is not a balance\'s'),
    ("USD:hold:a b", "1", 'field "USD:hold:a b" is not a balance\'s'),
])
def test_show_damaged_field(ctl, field, value, says):
    ctl.move("credit", "1", "c1")
    ctl.rc.hset(BAL, field, value)
    line = one_line_error(ctl.run("balance", "show", B), EX_DATAERR)
    assert says in line, line
    assert line.startswith("tollctl: toll:balance:{acme}: "), line


def test_show_another_currency_damaged(ctl):
    ctl.move("credit", "1", "c1")
    ctl.rc.hset(BAL, "EUR:spent", "abc")
    assert ctl.show(B, "--currency", "USD")["balances"][0]["credits"] == "1"
    one_line_error(ctl.run("balance", "show", B), EX_DATAERR)


def test_json_option_accepted(ctl):
    out = ctl.ok("--json", "balance", "credit", B, "1", "--ref", "c1")
    assert out["existing"] is False
    assert ctl.ok("balance", "show", B, "--json")["balances"][0]["credits"] \
        == "1"


# ================================================== 7. Redis away: 69

@pytest.mark.parametrize("args", [
    ["balance", "credit", B, "1", "--ref", "c1"],
    ["balance", "debit", B, "1", "--ref", "d1"],
    ["balance", "refund", B, "1", "--ref", "r1"],
    ["balance", "show", B],
])
def test_redis_down(ctl, redis_server, args):
    redis_server.kill()
    line = one_line_error(ctl.run(*args), EX_UNAVAILABLE)
    assert redis_server.address in line, line
    assert "check that Redis runs there" in line, line


def test_wrong_type_refused(ctl):
    ctl.rc.set(BAL, "x")
    p = ctl.run("balance", "credit", B, "1", "--ref", "c1")
    assert "WRONGTYPE" in one_line_error(p, EX_UNAVAILABLE)
    assert not ctl.rc.exists(REFS) and not ctl.rc.exists(JOURNAL)
    p = ctl.run("balance", "show", B)
    assert "WRONGTYPE" in one_line_error(p, EX_UNAVAILABLE)


@pytest.mark.parametrize("fault", ["oom", "readonly"])
def test_redis_refuses_the_write(ctl, redis_server, tmp_path, fault):
    """A Redis that is up and refuses to write: 69, one line naming the
    refusal, nothing of the movement written; the same ref later works."""
    ctl.move("credit", "5", "c1")
    before = ctl.dump()
    faults = Faults(redis_server, tmp_path)
    try:
        faults.begin(fault)
        for kind in KINDS:
            p = ctl.run("balance", kind, B, "1", "--ref", "x-" + kind)
            one_line_error(p, EX_UNAVAILABLE)
            assert fault_lines(p.stderr, fault), p.stderr
        # show only reads: answered
        assert balance(ctl)["available"] == "5"
        faults.end()
    finally:
        faults.end()
        faults.close()
    assert ctl.dump() == before
    assert ctl.move("credit", "1", "x-credit")["existing"] is False


def test_index_not_a_set_refused_before_writing(ctl):
    # else the movement would be written and then the SADD refused
    ctl.rc.set(INDEX, "x")
    before = ctl.dump()
    p = ctl.run("balance", "credit", B, "1", "--ref", "c1")
    line = one_line_error(p, EX_UNAVAILABLE)
    assert INDEX + " is a string, not a set" in line, line
    assert ctl.dump() == before


def test_script_flushed_is_no_matter(ctl):
    # sent whole with EVAL: a Redis that lost its scripts still answers
    ctl.move("credit", "1", "c1")
    ctl.rc.script_flush()
    assert ctl.move("credit", "1", "c2")["existing"] is False
