"""The money path holds whatever a request, a fault or Redis does
(issue 13; docs/metering.md "Exactly once", docs/settle.md "Quarantine").

    1. a call that ends long after it passed the gate (a slow body that
       times out, an upstream timeout, an uncharged 5xx) never produces a
       count the ledger refuses, even when toll-settle drained in between;
       every other buyer keeps settling
    2. the meter's script applies a batch whole or not at all, and only a
       real overflow (said so by the script, not guessed from an error's
       text) leaves a batch out
    3. a zone too full to meter a call refuses the call (503): money
       fails closed
"""

import socket
import time

import pytest

from helpers import client
from helpers.keys import make_key
from helpers.meter import meter_http, meter_upstream, proxy_to, \
    upstream_block, usage
from helpers.procs import wait_for
from helpers.settle import Settle, day, ledger_check, ledger_usage, \
    usage_key

assert meter_upstream  # a fixture, used by name

PROXY_M = proxy_to("meterapi")


def priced(path, service, price="0.05", free=0, extra=""):
    return """
        location %s {
            toll on;
            toll_service %s provider=acme price=%s free_calls=%d;
            %s
            %s
        }
""" % (path, service, price, free, extra, PROXY_M)


def start(start_nginx, up, locations, http_extra="", **kw):
    return start_nginx(http_extra=meter_http() + upstream_block(
        "meterapi", up.port) + http_extra, locations=locations, **kw)


@pytest.fixture
def settle(redis_server, tmp_path):
    s = Settle(redis_server, tmp_path / "ledger.db")
    yield s
    s.close()


def settle_once(settle):
    p = settle.once()
    assert p.returncode == 0, p.stderr
    return p


def held_body(port, key, path, length=10):
    """A POST that announces a body and never sends it: nginx waits for
    it until client_body_timeout, then answers 408."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(("POST %s HTTP/1.1\r\nHost: t\r\nAuthorization: %s\r\n"
               "Content-Length: %d\r\n\r\n" % (path, key.bearer()[1],
                                                length)).encode())
    return s


def read_status(s):
    s.settimeout(30)
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data else None


# ======================================= 1. late corrections and the drain

@pytest.mark.parametrize("free", [0, 5])
def test_slow_body_after_a_drain_stops_no_settlement(
        start_nginx, meter_upstream, redis_server, settle, free):
    """A buyer holds a body past client_body_timeout while toll-settle
    drains.  The call never reached the upstream: it costs nothing, no
    count of it is ever negative in Redis, the ledger takes every pass,
    and another buyer's calls reach the ledger."""
    ngx = start(start_nginx, meter_upstream,
                priced("/svc/", "svc", free=free,
                       extra="client_body_timeout 2s;"))
    slow = make_key(redis_server, owner="slow-buyer")
    other = make_key(redis_server, owner="other-buyer")

    # the key is cached by a first, normal call
    r = client.request(ngx.port, path="/svc/x", headers=[slow.bearer()])
    assert r.status == 200

    s = held_body(ngx.port, slow, "/svc/x")
    try:
        # the gate has passed the call; whatever the meter sent of it so
        # far is drained while the body is still awaited
        time.sleep(0.6)
        settle_once(settle)
        # nginx closes the connection on a body timeout (408 in its log)
        assert read_status(s) in (None, 408)
        wait_for(lambda: "status=408" in ngx.read(ngx.prefix + "/logs/meter.log"), 10,
                 what="the 408 in the usage log")
        # the usage log says what the call cost: nothing, it never left
        line = [ln for ln in ngx.read(ngx.prefix + "/logs/meter.log")
                .splitlines() if "status=408" in ln][0]
        assert "|amount=0|free=false|" in line, line
    finally:
        s.close()

    for _ in range(3):
        r = client.request(ngx.port, path="/svc/x", headers=[other.bearer()])
        assert r.status == 200

    ngx.stop()

    # no count of any buyer is below zero in Redis
    for (buyer, service), rec in usage(redis_server.client).items():
        for field, v in rec.items():
            if field not in ("provider", "currency"):
                assert v >= 0, (buyer, service, field, v)

    p = settle_once(settle)
    assert "cannot post" not in p.stderr, p.stderr
    got = ledger_usage(settle.ledger)
    d = day()
    paid = max(0, 1 - free)
    assert got[("slow-buyer", d, "svc")]["calls"] == 1, got
    assert got[("slow-buyer", d, "svc")]["amount_micros"] == paid * 50000
    other_paid = 3 - min(3, free)
    assert got[("other-buyer", d, "svc")]["calls"] == 3, got
    assert got[("other-buyer", d, "svc")]["amount_micros"] == \
        other_paid * 50000, got
    assert meter_upstream.counts() == {("slow-buyer", "svc"): 1,
                                       ("other-buyer", "svc"): 3}
    ledger_check(settle.ledger)


def test_upstream_timeout_after_a_drain_stops_no_settlement(
        start_nginx, meter_upstream, redis_server, settle):
    """An upstream that times out (504, not charged) after toll-settle
    drained the call's first count."""
    ngx = start(start_nginx, meter_upstream,
                priced("/slow/", "slow", extra="proxy_read_timeout 2s;"))
    k = make_key(redis_server, owner="t-buyer")
    done = {}

    def call():
        done["r"] = client.request(ngx.port, path="/slow/x?delay_ms=4000",
                                   headers=[k.bearer()], timeout=30)

    import threading
    t = threading.Thread(target=call)
    t.start()
    meter_upstream.wait_total(1)
    time.sleep(0.6)
    settle_once(settle)
    t.join(30)
    assert done["r"].status == 504
    ngx.stop()

    settle_once(settle)
    got = ledger_usage(settle.ledger)
    rec = got.get(("t-buyer", day(), "slow"))
    assert rec is not None, got
    assert (rec["calls"], rec["errors"], rec["paid_calls"],
            rec["amount_micros"]) == (1, 1, 0, 0), rec
    ledger_check(settle.ledger)


@pytest.mark.allow_log(r"exited on signal 9")
def test_worker_killed_while_upstream_counts_the_call_once(
        start_nginx, meter_upstream, redis_server):
    """A worker SIGKILLed while its call is upstream: the call's record
    stays in the zone, and another worker counts it at its price, once."""
    ngx = start(start_nginx, meter_upstream, priced("/svc/", "svc"))
    k = make_key(redis_server, owner="killed-buyer")
    r = client.request(ngx.port, path="/svc/x", headers=[k.bearer()])
    assert r.status == 200

    import threading
    def call():
        try:
            client.request(ngx.port, path="/svc/x?delay_ms=3000",
                           headers=[k.bearer()], timeout=10)
        except client.NoResponse:
            pass   # its worker was killed

    t = threading.Thread(target=call, daemon=True)
    before = set(ngx.worker_pids())
    t.start()
    meter_upstream.wait_total(2)
    # the worker that holds the call is the one with an upstream socket
    victim = busy_worker(ngx, meter_upstream.port)
    import os
    import signal
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(set(ngx.worker_pids()) - before) >= 1, 10,
             what="nginx to start a new worker")
    wait_for(lambda: usage(redis_server.client).get(
        ("killed-buyer", "svc"), {}).get("calls") == 2, 10,
        what="the killed worker's call to be counted")
    ngx.stop()
    rec = usage(redis_server.client)[("killed-buyer", "svc")]
    assert (rec["calls"], rec["paid_calls"], rec["amount_micros"]) == \
        (2, 2, 100000), rec


def busy_worker(ngx, upstream_port):
    import subprocess
    out = subprocess.run(["ss", "-tnpH", "dst", "127.0.0.1:%d" % upstream_port],
                         capture_output=True, text=True).stdout
    for pid in ngx.worker_pids():
        if "pid=%d," % pid in out:
            return pid
    raise AssertionError("no worker holds an upstream connection:\n" + out)


# ================================== 2. the meter's script: all or nothing

@pytest.mark.allow_log(r"refused the meter's batch")
def test_meter_batch_refused_applies_nothing_and_waits(
        start_nginx, meter_upstream, redis_server):
    """A usage hash whose count the script cannot add to (not an integer):
    on main the amount went in before the failing HINCRBY, again at every
    retry.  Now nothing is applied, the batch waits under its id, one log
    line says so, and it is applied once when the hash is repaired."""
    ngx = start(start_nginx, meter_upstream, priced("/svc/", "svc"))
    k = make_key(redis_server, owner="bad-hash")
    rc = redis_server.client
    key = usage_key("bad-hash", day())
    rc.hset(key, "svc:errors", "not-a-number")
    r = client.request(ngx.port, path="/svc/x", headers=[k.bearer()])
    assert r.status == 200
    wait_for(lambda: "refused the meter's batch" in ngx.error_log_text(), 10,
             what="the refusal in the log")
    time.sleep(1.0)   # five more rounds of retries, each refused
    assert rc.hget(key, "svc:amount_micros") is None
    assert rc.hget(key, "svc:calls") is None
    assert ngx.error_log_text().count("refused the meter's batch") == 1
    rc.hdel(key, "svc:errors")
    wait_for(lambda: rc.hget(key, "svc:calls") is not None, 10,
             what="the batch to be applied")
    ngx.stop()
    assert int(rc.hget(key, "svc:calls")) == 1
    assert int(rc.hget(key, "svc:amount_micros")) == 50000


@pytest.mark.allow_log(r"meter overflow in redis")
def test_meter_overflow_in_redis_applies_nothing(
        start_nginx, meter_upstream, redis_server):
    """The calls count would overflow, the amount would not: on main the
    amount was added, then the batch dropped.  Now the script finds the
    overflow before any write and the batch is left out whole, loudly."""
    ngx = start(start_nginx, meter_upstream, priced("/svc/", "svc"))
    k = make_key(redis_server, owner="full-hash")
    rc = redis_server.client
    key = usage_key("full-hash", day())
    rc.hset(key, "svc:calls", str(2**63 - 1))
    r = client.request(ngx.port, path="/svc/x", headers=[k.bearer()])
    assert r.status == 200
    wait_for(lambda: "meter overflow in redis" in ngx.error_log_text(), 10,
             what="the overflow alert")
    ngx.stop()
    assert rc.hget(key, "svc:amount_micros") is None
    assert int(rc.hget(key, "svc:calls")) == 2**63 - 1


# ======================================== 3. a full zone fails closed

@pytest.mark.allow_log(r"zone full", r"ngx_slab_alloc")
def test_full_zone_refuses_what_it_cannot_meter(
        start_nginx, meter_upstream, redis_server):
    """Redis away, so every buyer's counts wait in a small zone until it
    is full.  Every call the upstream served is metered once Redis is
    back; the calls the zone could not hold were refused (503), never
    served free."""
    ngx = start(start_nginx, meter_upstream, priced("/svc/", "svc"),
                toll_http="    toll_redis %s timeout=300ms;\n"
                          "    toll_zone 64k;" % redis_server.address)
    keys = [make_key(redis_server, owner="z%03d" % i) for i in range(150)]
    # a first call caches each key; while Redis answers, the zone makes
    # room as the meter's nodes are flushed (a burst may be refused)
    for k in keys:
        wait_for(lambda: client.request(ngx.port, path="/svc/x",
                                        headers=[k.bearer()]).status == 200,
                 10, interval=0.1, what="a first call to pass")
    wait_for(lambda: sum(v["calls"] for v in
                         usage(redis_server.client).values()) == len(keys),
             20, what="the first calls in Redis")
    redis_server.kill()
    served = refused = 0
    for _ in range(3):
        for k in keys:
            r = client.request(ngx.port, path="/svc/x",
                               headers=[k.bearer()])
            assert r.status in (200, 503), r.status
            if r.status == 200:
                served += 1
            else:
                refused += 1
    assert refused > 0, "the zone never filled: make it smaller"
    redis_server.start()
    wait_for(lambda: sum(v["calls"] for v in
                         usage(redis_server.client).values()) == served,
             30, what="every served call in Redis")
    ngx.stop()
    assert meter_upstream.total == len(keys) + served
    assert sum(v["calls"] for v in
               usage(redis_server.client).values()) == served


# ========================== 4. what the ledger refuses is set aside

def tollctl_json(redis_server, *args):
    import json
    import subprocess
    from helpers.settle import preload_env, tollctl_bin
    p = subprocess.run([tollctl_bin(), "--redis", redis_server.address]
                       + list(args), capture_output=True, text=True,
                       env=preload_env(), timeout=30)
    return p, (json.loads(p.stdout) if p.returncode == 0 and
               p.stdout.startswith(("[", "{")) else None)


def test_refused_batch_is_quarantined_and_replayed(settle, redis_server):
    """A usage hash with a negative count (as the meter before this fix
    wrote after a drain) is refused by the ledger.  It is set aside, said
    once, listed by tollctl; every other buyer settles; once repaired and
    replayed it is posted, under its own batch id, once."""
    from helpers.settle import write_usage
    rc = redis_server.client
    d = day()
    write_usage(rc, "good-1", "svc", "acme", calls=2)
    neg = usage_key("neg-buyer", d)
    rc.hset(neg, mapping={"svc:calls": "-1", "svc:paid_calls": "-1",
                          "svc:free_calls": "0", "svc:errors": "0",
                          "svc:latency_ms": "0",
                          "svc:amount_micros": "-50000",
                          "svc:provider": "acme"})
    rc.sadd("toll:usage:index", neg)
    write_usage(rc, "good-2", "svc", "acme", calls=3)

    p = settle.once()
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("quarantined claim") == 1, p.stderr
    got = ledger_usage(settle.ledger)
    assert set(got) == {("good-1", d, "svc"), ("good-2", d, "svc")}, got

    # a second pass does not try it again, nor say it again
    write_usage(rc, "good-1", "svc", "acme", calls=1)
    p = settle.once()
    assert p.returncode == 0 and "quarantined" not in p.stderr, p.stderr
    assert ledger_usage(settle.ledger)[("good-1", d, "svc")]["calls"] == 3

    p, listed = tollctl_json(redis_server, "quarantine", "list", "--json")
    assert p.returncode == 0, p.stderr
    assert len(listed) == 1, listed
    q = listed[0]
    assert (q["buyer"], q["day"]) == ("neg-buyer", d), q
    assert "invalid usage" in q["reason"], q
    assert q["fields"]["svc:amount_micros"] == "-50000", q

    # replaying an unknown claim is refused, and changes nothing
    p, _ = tollctl_json(redis_server, "quarantine", "replay",
                        "toll:drain:{x}:%s:%s" % (d, "0" * 32))
    assert p.returncode == 66 and "not in quarantine" in p.stderr, p.stderr

    # the operator repairs the claim, then gives it back
    claim = q["claim"]
    rc.hset(claim, mapping={"svc:calls": "1", "svc:paid_calls": "1",
                            "svc:amount_micros": "50000"})
    p, _ = tollctl_json(redis_server, "quarantine", "replay", claim)
    assert p.returncode == 0 and "replayed 1 claim" in p.stdout, p.stderr
    assert rc.hlen("toll:drain:quarantine") == 0
    p = settle.once()
    assert p.returncode == 0, p.stderr
    got = ledger_usage(settle.ledger)
    assert got[("neg-buyer", d, "svc")]["amount_micros"] == 50000, got
    assert not rc.exists(claim)
    ledger_check(settle.ledger)
    db = __import__("sqlite3").connect(settle.ledger)
    assert db.execute("SELECT count(*) FROM batches WHERE id = ?",
                      (claim.rsplit(":", 1)[1],)).fetchone()[0] == 1
