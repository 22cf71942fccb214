"""toll-settle: the drain from Redis to the ledger, exactly once
(issue 5, docs/settle.md).

    1. the command line and the configuration file: every bad input a
       one-line error and its sysexits code
    2. a drain pass: the ledger holds exactly what the meter wrote,
       balanced, fees by the rounding rule, Redis emptied, the mirror kept
    3. crash at each step of the drain, many seeds: after a restart the
       ledger equals the meter exactly, no batch twice
    4. increments that arrive during drains are never lost
    5. two workers on one ledger; a second ledger on one Redis
    6. Redis away and back; SIGTERM; a claim the meter did not write
"""

import os
import random
import signal
import sqlite3
import threading
import time

import pytest

from helpers.procs import wait_for
from helpers.settle import (Settle, add_into, day, ledger_check,
                            ledger_usage, redis_usage_left, settle_bin,
                            usage_key, wait_drained, write_usage)

import subprocess

STEPS = ("intent", "claim", "read", "commit", "delete")


@pytest.fixture
def settle(redis_server, tmp_path):
    s = Settle(redis_server, tmp_path / "ledger.db")
    yield s
    s.close()


def run(*args, timeout=30):
    return subprocess.run([settle_bin()] + list(args), capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(p):
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("toll-settle: "), p.stderr
    return lines[0]


# ================================================ 1. command line, config

def test_help_and_version():
    p = run("--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: toll-settle")
    assert p.stderr == ""
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("toll-settle ")


@pytest.mark.parametrize("args, code, words", [
    (["--bogus"], 64, "unknown option"),
    (["-c"], 64, "needs a value"),
    (["extra"], 64, "unexpected argument"),
    (["--redis", "nohost"], 64, "invalid --redis"),
    (["--redis", "h:99999"], 64, "invalid --redis"),
    # a socket path sun_path cannot hold (107 bytes and its NUL)
    (["--redis", "unix:/" + "p" * 107], 64, "invalid --redis"),
    (["--redis", "unix:redis.sock"], 64, "invalid --redis"),
    (["--redis", "[127.0.0.1]:6379"], 64, "invalid --redis"),
    (["--redis", "[fe80::1%eth0]:6379"], 64, "invalid --redis"),
    (["--redis", "redis$host:6379"], 64, "invalid --redis"),
    (["--redis", "h:+6379"], 64, "invalid --redis"),
    (["--interval", "10ms"], 64, "invalid --interval"),
    (["--interval", "2h"], 64, "invalid --interval"),
    (["--ledger", ""], 64, "invalid --ledger"),
    (["-c", "/nonexistent/settle.conf"], 66, "cannot open"),
])
def test_usage_errors(args, code, words):
    p = run(*args)
    assert p.returncode == code, p.stderr
    assert words in one_line_error(p)
    assert p.stdout == ""


@pytest.mark.parametrize("line, words", [
    ("bogus 1", 'unknown directive "bogus"'),
    ("fee 101%", 'invalid fee "101%"'),
    ("fee 10", 'invalid fee "10"'),
    ("fee 2.555%", 'invalid fee'),
    ("fee -1%", 'invalid fee'),
    ("provider_fee acme", 'takes a provider and a percent'),
    ("provider_fee acme 5", 'invalid fee "5"'),
    ("interval 0s", 'invalid interval'),
    ("interval 61s", 'invalid interval'),
    ("batch_max 0", 'invalid batch_max'),
    ("redis_db x", 'invalid redis_db'),
    ("redis localhost", 'invalid redis address'),
    ("redis unix:", 'invalid redis address'),
    ("redis unix:/" + "p" * 107, 'invalid redis address'),
    ("redis_db -0", 'invalid redis_db'),
    ("webhook ftp://x events=settlement.created secret=s",
     'http:// or https://'),
    ("webhook http://x events=nope secret=s", 'unknown event "nope"'),
    ("webhook http://x events=settlement.created", 'needs "events=" and'),
    ("webhook http://x secret=s", 'needs "events=" and'),
    ("webhook http://x events=settlement.created secret=s color=red",
     'invalid webhook parameter "color"'),
    ("redis_timeout 11m", 'invalid redis_timeout'),
    ("ledger", 'takes one value'),
])
def test_config_errors(tmp_path, line, words):
    conf = tmp_path / "settle.conf"
    conf.write_text("# a comment\n\nredis 127.0.0.1:1\n%s\n" % line)
    p = run("-c", str(conf), "--once", "--ledger", str(tmp_path / "l.db"))
    assert p.returncode == 78, p.stderr
    msg = one_line_error(p)
    assert "%s:4: " % conf in msg and words in msg, msg
    # the secret of a webhook line never shows in a message
    assert "secret=s" not in msg


def test_redis_unreachable_once(tmp_path):
    p = run("--once", "--redis", "127.0.0.1:1", "--ledger",
            str(tmp_path / "l.db"))
    assert p.returncode == 69, p.stderr
    assert "cannot connect to redis at 127.0.0.1:1" in one_line_error(p)


def test_redis_socket_path_at_the_limit(tmp_path):
    """The longest path sun_path holds is taken, and tried as it is."""
    path = "/" + "p" * 106
    p = run("--once", "--redis", "unix:" + path, "--ledger",
            str(tmp_path / "l.db"))
    assert p.returncode == 69, p.stderr
    assert "cannot connect to redis at unix:%s" % path in one_line_error(p)


def test_ledger_cannot_be_created(redis_server, tmp_path):
    p = run("--once", "--redis", redis_server.address, "--ledger",
            str(tmp_path / "no" / "such" / "dir" / "l.db"))
    assert p.returncode == 73, p.stderr
    assert "cannot open the ledger" in one_line_error(p)


def test_not_a_ledger(redis_server, tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE meta (name TEXT, value TEXT)")
    db.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    db.commit()
    db.close()
    p = run("--once", "--redis", redis_server.address, "--ledger", str(path))
    assert p.returncode == 73
    assert "schema version 99" in one_line_error(p)


# ===================================================== 2. one drain pass

def test_once_posts_exactly_and_balanced(settle, redis_server):
    rc = redis_server.client
    want = {}
    # buyers with the characters a key owner may have, two days
    for buyer in ("alice", "bob:x}y", "c{d"):
        for d in (day(), day(-1)):
            for svc, prov, price in (("search", "acme", 50000),
                                     ("geo", "globex", 123)):
                rec = write_usage(rc, buyer, svc, prov, d=d, calls=7,
                                  free=2, price_micros=price,
                                  latency_ms=70, errors=1)
                add_into(want, (buyer, d, svc), rec)

    p = settle.once("-v")
    assert p.returncode == 0, p.stderr
    assert ledger_usage(settle.ledger) == want
    ledger_check(settle.ledger)

    # Redis: usage gone, no claim left, the mirror holds what was drained
    assert redis_usage_left(rc) == {}
    assert rc.scard("toll:drain:open") == 0
    assert rc.scard("toll:usage:index") == 0
    m = rc.hgetall(usage_key("bob:x}y", day()) + ":drained")
    assert m["search:calls"] == "7" and m["search:provider"] == "acme"
    assert m["geo:amount_micros"] == str(5 * 123)
    assert 0 < rc.ttl(usage_key("alice", day()) + ":drained") <= 35 * 86400

    # fee 10 % rounded half up, the provider gets the rest
    db = sqlite3.connect(settle.ledger)
    for amount, fee in db.execute("SELECT amount_micros, fee_micros FROM"
                                  " transactions"):
        assert fee == (amount * 1000 + 5000) // 10000
    db.close()

    # a second pass finds nothing and changes nothing
    before = ledger_usage(settle.ledger)
    p = settle.once()
    assert p.returncode == 0 and ledger_usage(settle.ledger) == before


def test_provider_fee_and_rounding(redis_server, tmp_path):
    s = Settle(redis_server, tmp_path / "l.db",
               ["fee 2.5%", "provider_fee acme 0%", "provider_fee big 100%"])
    rc = redis_server.client
    write_usage(rc, "b1", "s1", "acme", amount_micros=999, calls=1)
    write_usage(rc, "b1", "s2", "other", amount_micros=20, calls=1)
    write_usage(rc, "b1", "s3", "big", amount_micros=77, calls=1)
    write_usage(rc, "b2", "s2", "other", amount_micros=19, calls=1)
    assert s.once().returncode == 0
    db = sqlite3.connect(s.ledger)
    got = {(b, svc): (a, bp, f) for b, svc, a, bp, f in db.execute(
        "SELECT buyer, service, amount_micros, fee_bp, fee_micros"
        " FROM transactions")}
    # 20 x 2.5 % = 0.5 rounds up to 1; 19 x 2.5 % = 0.475 rounds down
    assert got == {("b1", "s1"): (999, 0, 0), ("b1", "s2"): (20, 250, 1),
                   ("b1", "s3"): (77, 10000, 77),
                   ("b2", "s2"): (19, 250, 0)}
    bal = dict(db.execute(
        "SELECT a.name, sum(e.credit_micros) - sum(e.debit_micros)"
        " FROM entries e JOIN accounts a ON a.id = e.account_id"
        " GROUP BY a.name"))
    assert bal == {"buyer:b1": -(999 + 20 + 77), "buyer:b2": -19,
                   "provider:acme": 999, "provider:other": 19 + 19,
                   "platform:fees": 1 + 77}
    db.close()
    ledger_check(s.ledger)


def test_free_calls_only_is_a_transaction_without_entries(settle,
                                                          redis_server):
    rc = redis_server.client
    write_usage(rc, "fr", "svc", "acme", calls=5, free=5)
    assert settle.once().returncode == 0
    db = sqlite3.connect(settle.ledger)
    assert db.execute("SELECT calls, free_calls, amount_micros FROM"
                      " transactions").fetchall() == [(5, 5, 0)]
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
    db.close()


def test_lost_index_entry_is_found_by_the_sweep(settle, redis_server):
    rc = redis_server.client
    want = {}
    add_into(want, ("lost", day(), "svc"),
             write_usage(rc, "lost", "svc", "acme", calls=3, index=False))
    assert rc.scard("toll:usage:index") == 0
    assert settle.once().returncode == 0
    assert ledger_usage(settle.ledger) == want


def test_claim_the_meter_did_not_write_is_quarantined(settle, redis_server):
    rc = redis_server.client
    want = {}
    add_into(want, ("good", day(), "svc"),
             write_usage(rc, "good", "svc", "acme", calls=2))
    bad = usage_key("bad", day())
    rc.hset(bad, mapping={"svc:calls": "1", "svc:provider": "acme",
                          "svc:amount_micros": "1.5"})
    rc.sadd("toll:usage:index", bad)
    p = settle.once()
    assert p.returncode == 0
    assert "holds a field the meter does not write" in p.stderr
    assert ledger_usage(settle.ledger) == want
    # nothing of it posted; it stays in Redis, set aside for the operator
    assert rc.scard("toll:drain:open") == 0
    left = rc.hkeys("toll:drain:quarantine")
    assert len(left) == 1 and rc.hget(left.pop(), "svc:amount_micros") \
        == "1.5"
    # and nothing of it in the mirror, which counts what was posted
    assert not rc.exists(bad + ":drained")


def test_names_the_meter_cannot_write_are_left_alone(settle, redis_server):
    """A buyer with a newline or a NUL is no name of the meter's (a key
    owner is printable ASCII); tollctl never read one, and toll-settle
    posted "a\\0b" as buyer "a".  Both read names with lib/toll_names.c
    now: such a hash stays in Redis, out of the index, untouched."""
    rc = redis_server.client
    want = {}
    add_into(want, ("good", day(), "svc"),
             write_usage(rc, "good", "svc", "acme", calls=2))
    odd = [usage_key(b, day()) for b in ("a\nb", "a\0b", "x" * 1003)]
    for name in odd:
        rc.hset(name, mapping={"svc:calls": "1", "svc:provider": "acme",
                               "svc:amount_micros": "5"})
        rc.sadd("toll:usage:index", name)
    p = settle.once()
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("not a usage hash") == 3, p.stderr
    assert ledger_usage(settle.ledger) == want
    for name in odd:
        assert rc.hget(name, "svc:calls") == "1"
    assert rc.scard("toll:usage:index") == 0
    assert rc.scard("toll:drain:open") == 0
    assert rc.hlen("toll:drain:quarantine") == 0
    ledger_check(settle.ledger)


def test_count_longer_than_redis_writes_is_quarantined(settle,
                                                       redis_server):
    """The claim script does not mirror a count of more than 20 bytes;
    the drain posted it all the same when it read as an int64 ("0...01"),
    and the mirror then lacked what the ledger held."""
    rc = redis_server.client
    bad = usage_key("zeros", day())
    rc.hset(bad, mapping={"svc:calls": "0" * 24 + "1",
                          "svc:provider": "acme", "svc:amount_micros": "5"})
    rc.sadd("toll:usage:index", bad)
    p = settle.once()
    assert p.returncode == 0, p.stderr
    assert "holds a field the meter does not write" in p.stderr
    assert ledger_usage(settle.ledger) == {}
    assert rc.hlen("toll:drain:quarantine") == 1
    assert not rc.exists(bad + ":drained")


# ===================================================== 3. crash points

def random_usage(rc, rng, want, buyers=3):
    for _ in range(rng.randrange(2, 8)):
        buyer = "buyer%d" % rng.randrange(buyers)
        d = day(-rng.randrange(2))
        svc = rng.choice(("a", "b"))
        calls = rng.randrange(1, 50)
        free = rng.randrange(0, calls + 1)
        rec = write_usage(rc, buyer, svc, "prov-" + svc, d=d, calls=calls,
                          free=free, price_micros=rng.choice((1, 50000,
                                                              999999)))
        add_into(want, (buyer, d, svc), rec)


@pytest.mark.parametrize("step", STEPS)
def test_crash_at_each_step(settle, redis_server, step):
    rc = redis_server.client
    want = {}
    rng = random.Random(step)
    crashed = 0
    for seed in range(8):
        random_usage(rc, rng, want)
        nth = rng.randrange(1, 4)
        p = settle.once(env={"TOLL_SETTLE_CRASH": "%s:%d" % (step, nth)})
        if p.returncode == -signal.SIGKILL:
            crashed += 1
            assert "killed after %s" % step in p.stderr
        else:
            # fewer than nth hashes this round: it ran to the end
            assert p.returncode == 0, p.stderr
        # more usage arrives before the restart
        random_usage(rc, rng, want)
        p = settle.once()
        assert p.returncode == 0, p.stderr
        assert ledger_usage(settle.ledger) == want, "seed %d" % seed
        ledger_check(settle.ledger)
        assert redis_usage_left(rc) == {}
        assert rc.scard("toll:drain:open") == 0
    assert crashed >= 4


def test_crash_twice_in_a_row(settle, redis_server):
    """A restart that is killed again while it recovers."""
    rc = redis_server.client
    want = {}
    rng = random.Random(7)
    random_usage(rc, rng, want, buyers=6)
    for step in ("claim", "commit", "read", "delete"):
        p = settle.once(env={"TOLL_SETTLE_CRASH": step})
        assert p.returncode in (0, -signal.SIGKILL)
    assert settle.once().returncode == 0
    assert ledger_usage(settle.ledger) == want
    ledger_check(settle.ledger)


# ============================================ 4. increments during drains

def test_increments_during_drains_are_not_lost(settle, redis_server):
    rc = redis_server.client
    want = {}
    stop = threading.Event()
    lock = threading.Lock()

    def writer(i):
        rng = random.Random(i)
        while not stop.is_set():
            buyer = "w%d" % rng.randrange(3)
            svc = rng.choice(("x", "y"))
            rec = write_usage(rc, buyer, svc, "p", calls=rng.randrange(1, 9),
                              price_micros=rng.randrange(1, 10 ** 6))
            with lock:
                add_into(want, (buyer, day(), svc), rec)

    p = settle.start(interval="100ms")
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    wait_drained(rc, timeout=30)
    assert settle.stop(p) == 0
    assert ledger_usage(settle.ledger) == want
    ledger_check(settle.ledger)
    db = sqlite3.connect(settle.ledger)
    batches = db.execute("SELECT count(*) FROM batches").fetchone()[0]
    db.close()
    print("%d batches while 3 writers wrote" % batches)
    assert batches > 6  # the writers were drained many times


# ====================================================== 5. two workers

def test_two_workers_never_post_a_batch_twice(settle, redis_server):
    rc = redis_server.client
    want = {}
    rng = random.Random(5)
    a = settle.start()
    b = settle.start()

    def waiting(p):
        return "waiting for it to stop" in Settle.log_text(p)

    wait_for(lambda: waiting(a) or waiting(b), 10, what="one worker waits")
    active, standby = (b, a) if waiting(a) else (a, b)
    assert not waiting(active)

    # --once while a daemon drains the ledger: told, exit 75
    p = settle.once()
    assert p.returncode == 75 and "another toll-settle" in p.stderr

    for _ in range(5):
        random_usage(rc, rng, want)
        time.sleep(0.05)
    wait_drained(rc)
    active.send_signal(signal.SIGKILL)
    active.wait(timeout=10)
    # the standby takes over
    for _ in range(5):
        random_usage(rc, rng, want)
    wait_drained(rc)
    assert settle.stop(standby) == 0
    assert ledger_usage(settle.ledger) == want
    ledger_check(settle.ledger)


def test_second_ledger_on_one_redis_is_refused(settle, redis_server,
                                               tmp_path):
    write_usage(redis_server.client, "x", "s", "p")
    assert settle.once().returncode == 0
    other = Settle(redis_server, tmp_path / "other.db")
    write_usage(redis_server.client, "x", "s", "p")
    p = other.once()
    assert p.returncode == 78
    assert "is drained into the ledger" in p.stderr
    assert "toll:settle:ledger" in p.stderr
    # nothing of it drained
    assert redis_usage_left(redis_server.client) != {}


# =============================================== 6. Redis away, SIGTERM

def test_redis_away_then_back(settle, redis_server):
    rc = redis_server.client
    redis_server.kill()
    p = settle.start()
    wait_for(lambda: "cannot connect to redis" in Settle.log_text(p), 10,
             what="the worker says Redis is away")
    time.sleep(1.5)
    assert p.poll() is None
    redis_server.restart()
    want = {}
    add_into(want, ("back", day(), "s"),
             write_usage(rc, "back", "s", "p", calls=4))
    wait_drained(rc)
    assert settle.stop(p) == 0
    log = Settle.log_text(p)
    # said once per outage, not once per retry
    assert log.count("cannot connect to redis") == 1, log
    assert "is back" in log
    assert ledger_usage(settle.ledger) == want


def test_sigterm_exits_zero_and_finishes(settle, redis_server):
    rc = redis_server.client
    p = settle.start(interval="60s")
    want = {}
    rng = random.Random(3)
    random_usage(rc, rng, want, buyers=20)
    time.sleep(0.3)
    t0 = time.monotonic()
    assert settle.stop(p) == 0
    assert time.monotonic() - t0 < 5
    # whatever it had claimed is in the ledger; a --once finishes the rest
    assert settle.once().returncode == 0
    assert ledger_usage(settle.ledger) == want
