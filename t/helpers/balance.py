"""Prepaid balances in Redis, for tests (docs/metering.md "Prepaid
balances").

Credits go through the real script, lua/balance.lua, with the keys and
arguments tollctl sends; balance() reads the hash back as integers per
field, and invariant() checks credits - debits = available + held +
spent."""

import os
import time
import uuid

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "lua",
                      "balance.lua")
INT64_MAX = 2 ** 63 - 1


def balance_key(buyer):
    return "toll:balance:{%s}" % buyer


def credit(rc, buyer, micros, currency="USD", ref=None, kind="credit"):
    """Runs lua/balance.lua as tollctl does: returns [rc, record]."""
    with open(SCRIPT) as f:
        text = f.read()
    ref = ref or "test-" + uuid.uuid4().hex
    field = "%s:%s" % (currency, "credits" if kind == "credit" else "debits")
    record = "%s %s %d %d" % (kind, currency, micros, int(time.time()))
    out = rc.eval(text, 3, balance_key(buyer), balance_key(buyer) + ":refs",
                  balance_key(buyer) + ":journal",
                  ref, record, field, str(micros),
                  "%s:available" % currency, str(INT64_MAX - micros),
                  "credit" if kind == "credit" else "take")
    rc.sadd("toll:balance:index", buyer)
    return out


def balance(rc, buyer, currency="USD"):
    """{field: int} of one currency; holds and seen times per node under
    "hold:" / "seen:" keys."""
    out = {}
    prefix = currency + ":"
    for f, v in rc.hgetall(balance_key(buyer)).items():
        if f.startswith(prefix):
            out[f[len(prefix):]] = int(v)
    return out


def invariant(rc, buyer, currency="USD"):
    """Checks credits - debits = available + held + spent and held = the
    sum of the nodes' holds; returns the balance."""
    b = balance(rc, buyer, currency)
    g = lambda f: b.get(f, 0)  # noqa: E731
    assert g("credits") - g("debits") == \
        g("available") + g("held") + g("spent"), b
    holds = sum(v for f, v in b.items() if f.startswith("hold:"))
    assert holds == g("held"), b
    return b
