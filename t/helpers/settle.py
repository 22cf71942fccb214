"""Helpers for the toll-settle suites (t/test_settle*.py, docs/settle.md).

    settle_bin / tollctl_bin   the built programs
    Settle                     runs toll-settle: once() or start() a daemon
    write_usage                writes usage as the meter does (HINCRBY)
    ledger_rows / ledger_sums  reads the ledger with Python's sqlite3
    redis_usage_left           what Redis still holds of the usage
"""

import os
import random
import signal
import sqlite3
import subprocess
import time

import redis

from helpers.procs import wait_for

INT_FIELDS = ("calls", "free_calls", "paid_calls", "errors", "latency_ms",
              "amount_micros")


def build_dir():
    return os.environ.get("TOLL_BUILD", os.path.join(
        os.path.dirname(__file__), "..", "..", "build"))


def settle_bin():
    return os.path.join(build_dir(), "toll-settle")


def tollctl_bin():
    return os.path.join(build_dir(), "tollctl")


def preload_env(extra=None):
    """The environment for our programs; under test-asan the sanitizer
    runtime is linked in already (TOLL_PRELOAD is for nginx only)."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.setdefault("ASAN_OPTIONS", "abort_on_error=1:detect_leaks=1")
    if extra:
        env.update(extra)
    return env


class Settle:
    """toll-settle against one Redis (or the store redis_spec names: a
    RedisCluster's or RedisSentinel's .spec) and one ledger file."""

    def __init__(self, redis, ledger, conf_lines=(), workdir=None,
                 redis_spec=None):
        self.redis = redis
        self.ledger = str(ledger)
        self.workdir = workdir or os.path.dirname(self.ledger)
        self.conf = os.path.join(self.workdir, "settle-%d.conf"
                                 % random.randrange(1 << 30))
        with open(self.conf, "w") as f:
            f.write("redis %s\n" % (redis_spec or redis.address))
            f.write("ledger %s\n" % self.ledger)
            for line in conf_lines:
                f.write(line + "\n")
        self.procs = []

    def argv(self, *extra):
        return [settle_bin(), "-c", self.conf] + list(extra)

    def once(self, *extra, env=None, timeout=120):
        p = subprocess.run(self.argv("--once", *extra),
                           env=preload_env(env), capture_output=True,
                           text=True, timeout=timeout)
        return p

    def start(self, *extra, env=None, interval="100ms"):
        log = open(os.path.join(self.workdir, "settle-%d.log"
                                % len(self.procs)), "w+")
        p = subprocess.Popen(self.argv("--interval", interval, *extra),
                             env=preload_env(env), stdout=log,
                             stderr=subprocess.STDOUT, text=True)
        p.log = log
        self.procs.append(p)
        return p

    @staticmethod
    def log_text(p):
        p.log.flush()
        p.log.seek(0)
        return p.log.read()

    def stop(self, p, sig=signal.SIGTERM, timeout=20):
        if p.poll() is None:
            p.send_signal(sig)
        return p.wait(timeout=timeout)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
            p.log.close()


def day(offset=0):
    return time.strftime("%Y%m%d", time.gmtime(time.time() + offset * 86400))


def usage_key(buyer, d):
    return "toll:usage:{%s}:%s" % (buyer, d)


def write_usage(rc, buyer, service, provider, d=None, calls=1, free=0,
                amount_micros=None, price_micros=50000, errors=0,
                latency_ms=0, index=True):
    """One flush as the meter's script writes it (HINCRBY, amount first),
    then the SADD to the index, as the module sends it."""
    d = d or day()
    key = usage_key(buyer, d)
    paid = calls - free
    if amount_micros is None:
        amount_micros = paid * price_micros
    # one slot (the buyer's tag): a MULTI on one Redis, a plain
    # pipeline on a cluster client, which has no MULTI
    p = (rc.pipeline(transaction=True) if isinstance(rc, redis.Redis)
         else rc.pipeline())
    p.hincrby(key, service + ":amount_micros", amount_micros)
    p.hincrby(key, service + ":calls", calls)
    p.hincrby(key, service + ":free_calls", free)
    p.hincrby(key, service + ":paid_calls", paid)
    p.hincrby(key, service + ":errors", errors)
    p.hincrby(key, service + ":latency_ms", latency_ms)
    p.hset(key, service + ":provider", provider)
    p.sadd("toll:usage:{%s}:days" % buyer, d)
    p.execute()
    if index:
        rc.sadd("toll:usage:index", key)
    return {"calls": calls, "free_calls": free, "paid_calls": paid,
            "errors": errors, "latency_ms": latency_ms,
            "amount_micros": amount_micros}


def add_into(acc, key, rec):
    cur = acc.setdefault(key, dict.fromkeys(INT_FIELDS, 0))
    for f in INT_FIELDS:
        cur[f] += rec.get(f, 0)


def connect(ledger):
    db = sqlite3.connect("file:%s?mode=ro" % ledger, uri=True, timeout=30)
    return db


def ledger_usage(ledger):
    """{(buyer, day, service): {field: sum}} of the usage transactions."""
    db = connect(ledger)
    try:
        out = {}
        for row in db.execute(
                "SELECT buyer, day, service, sum(calls), sum(free_calls),"
                " sum(paid_calls), sum(errors), sum(latency_ms),"
                " sum(amount_micros) FROM transactions WHERE kind = 'usage'"
                " GROUP BY buyer, day, service"):
            out[tuple(row[:3])] = dict(zip(INT_FIELDS, row[3:]))
        return out
    finally:
        db.close()


def ledger_check(ledger):
    """integrity, every transaction balanced, debits = credits, batches
    unique: the invariants, read independently of tollctl."""
    db = connect(ledger)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        unbalanced = db.execute(
            "SELECT count(*) FROM (SELECT tx_id FROM entries GROUP BY tx_id"
            " HAVING sum(debit_micros) <> sum(credit_micros))").fetchone()[0]
        assert unbalanced == 0
        d, c = db.execute("SELECT coalesce(sum(debit_micros), 0),"
                          " coalesce(sum(credit_micros), 0)"
                          " FROM entries").fetchone()
        assert d == c, (d, c)
        td, tc = db.execute("SELECT debits_micros, credits_micros"
                            " FROM totals").fetchone()
        assert (td, tc) == (d, c)
        claims = db.execute("SELECT count(*), count(DISTINCT claim)"
                            " FROM batches").fetchone()
        assert claims[0] == claims[1], "a claim posted twice: %r" % (claims,)
        return {"debits": d, "credits": c}
    finally:
        db.close()


def redis_usage_left(rc):
    """{(buyer, day, service): fields} still in live usage hashes and in
    open claims (not yet in the ledger)."""
    out = {}
    for key in rc.scan_iter(match="toll:*", count=1000):
        k = key.decode() if isinstance(key, bytes) else key
        if k.startswith("toll:usage:{") and k[-9:-8] == ":" \
                and k[-8:].isdigit() and k[-10] == "}":
            buyer, d = k[len("toll:usage:{"):-10], k[-8:]
        elif k.startswith("toll:drain:{"):
            head, d, _batch = k.rsplit(":", 2)
            buyer = head[len("toll:drain:{"):-1]
        else:
            continue
        h = rc.hgetall(key)
        for f, v in h.items():
            f = f.decode() if isinstance(f, bytes) else f
            svc, metric = f.rsplit(":", 1)
            if metric in INT_FIELDS:
                cur = out.setdefault((buyer, d, svc),
                                     dict.fromkeys(INT_FIELDS, 0))
                cur[metric] += int(v)
    return out


def wait_drained(rc, timeout=30):
    def empty():
        return (not redis_usage_left(rc)
                and rc.scard("toll:drain:open") == 0)
    wait_for(empty, timeout, interval=0.05, what="usage drained")
