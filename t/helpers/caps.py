"""Spend caps in Redis, for tests (docs/metering.md "Spend caps").

set_cap() and set_key_cap() write the caps as tollctl does (the buyer's
cap hash, then the generation bumped); period_used() reads what a day or
a month counts as used."""

import time

GEN = "toll:cap:gen"
UNSET = object()


def cap_key(buyer):
    return "toll:cap:{%s}" % buyer


def _write(rc, buyer, prefix, daily, monthly, anchor=UNSET):
    for period, v in (("daily", daily), ("monthly", monthly)):
        if v is UNSET:
            continue
        if v is None:
            rc.hdel(cap_key(buyer), prefix + period)
        else:
            rc.hset(cap_key(buyer), prefix + period, str(v))
    if anchor is not UNSET:
        rc.hset(cap_key(buyer), "anchor", str(anchor))
    rc.incr(GEN)


def set_cap(rc, buyer, daily=UNSET, monthly=UNSET, currency="USD",
            anchor=UNSET):
    """The buyer's caps in micro-units; None removes one."""
    _write(rc, buyer, currency + ":", daily, monthly, anchor)


def set_key_cap(rc, buyer, key_id, daily=UNSET, monthly=UNSET,
                currency="USD"):
    _write(rc, buyer, "key:%s:%s:" % (key_id, currency), daily, monthly)


def period_used(rc, buyer, key=None, day=None, month=None, currency="USD"):
    """What a period counts as used: today's (UTC) unless month (its
    start, YYYYMMDD) or day is given; the buyer's, or one key's."""
    if month is not None:
        name = "%s:m%s" % (cap_key(buyer), month)
    else:
        day = day or time.strftime("%Y%m%d", time.gmtime())
        name = "%s:d%s" % (cap_key(buyer), day)
    field = ("key:%s:%s:used" % (key, currency) if key
             else "%s:used" % currency)
    return int(rc.hget(name, field) or 0)
