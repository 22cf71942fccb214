"""Money writes count once a replica has them (issue 18, part 5).

With `toll_redis cluster=... replicas=1`, a meter flush's answer reaches
the meter only after WAIT 1 says the buyer's replica has it.  With that
replica frozen, the primary still applies each flush, but the gate takes
it as unanswered and sends it again under the same flush id: the meter
must count each call once all the same, and the gate must say why it is
retrying.  Once the replica is back, everything is confirmed and the
meter equals the upstream.
"""

import signal
import threading
import time

from helpers import store_checks as sc
from helpers.cluster import key_slot
from helpers.keys import gen_key_id, raw_key
from helpers.meter import meter_upstream
from helpers.procs import wait_for

assert meter_upstream  # a fixture, used by name


def _gate(start_nginx, up, store, replicas):
    return start_nginx(
        http_extra=sc.meter_http() + sc.HTTP_EXTRA
        + sc.upstream_block("meterapi", up.port, keepalive=64),
        locations=sc.LOCATIONS,
        toll_http="    toll_redis %s timeout=1s replicas=%d "
                  "replica_wait=50ms;\n    toll_zone 10m;"
                  % (store.spec, replicas))


def _calls(ngx, key, n, path="/svc-a/x"):
    for i in range(n):
        r = sc.client.request(ngx.port, path="%s%d" % (path, i),
                              headers=[key.bearer()])
        assert r.status == 200, (r, r.body)


def test_meter_waits_for_the_replica(start_nginx, meter_upstream,
                                     redis_cluster):
    store = redis_cluster
    b = sc.buyers("durable", 1)[0]
    k = sc.keys_for(store, [b])[b]
    primary = store.primary_of(key_slot("{%s}" % b))
    replica = store.replica_of(primary)

    ngx = _gate(start_nginx, meter_upstream, store, replicas=1)
    sc.warm([ngx], [k])
    _calls(ngx, k, 5)

    replica.proc.send_signal(signal.SIGSTOP)
    try:
        _calls(ngx, k, 10)
        # several flush rounds, each applied by the primary and each
        # taken as unanswered: the same ids go again
        wait_for(lambda: "not on 1 replica(s)" in ngx.error_log_text(),
                 10, what="the gate to say its flushes are unreplicated")
        time.sleep(1.5)
    finally:
        replica.proc.send_signal(signal.SIGCONT)

    ngx.stop()              # a graceful stop waits until confirmed
    want = sc.expected_usage(meter_upstream, [b])
    assert want == {(b, "svc-a"): 15}
    assert sc.redis_calls(store, [b]) == want


def test_no_replica_wanted(start_nginx, meter_upstream, redis_cluster):
    # replicas=0: the same frozen replica stalls nothing and no line says
    # a write was unreplicated
    store = redis_cluster
    b = sc.buyers("nowait", 1)[0]
    k = sc.keys_for(store, [b])[b]
    replica = store.replica_of(store.primary_of(key_slot("{%s}" % b)))

    ngx = _gate(start_nginx, meter_upstream, store, replicas=0)
    sc.warm([ngx], [k])

    replica.proc.send_signal(signal.SIGSTOP)
    try:
        _calls(ngx, k, 6)
        ngx.stop()
    finally:
        replica.proc.send_signal(signal.SIGCONT)

    assert "replica(s)" not in ngx.error_log_text()
    assert sc.redis_calls(store, [b]) == {(b, "svc-a"): 6}


def _claim_held_while_frozen(start_nginx, up, store, tmp_path, tag, calls,
                             frozen_runs):
    """`calls` calls of a new buyer metered through a gate with
    replicas=1; then, with the buyer's replica frozen, `frozen_runs`
    toll-settle passes (each a new process) must stop at the claim's WAIT
    and post nothing; thawed, one pass posts the claim once."""
    b = sc.buyers(tag, 1)[0]
    k = sc.keys_for(store, [b])[b]
    replica = store.replica_of(store.primary_of(key_slot("{%s}" % b)))

    ngx = _gate(start_nginx, up, store, replicas=1)
    sc.warm([ngx], [k])
    _calls(ngx, k, calls)
    ngx.stop()

    sc.new_ledger(store)
    s = sc.Settle(None, tmp_path / "ledger.db", redis_spec=store.spec)
    try:
        replica.proc.send_signal(signal.SIGSTOP)
        try:
            for run in range(frozen_runs):
                p = s.once()
                assert p.returncode == 69, (run, p.returncode, p.stderr)
                assert "of 1 replica(s)" in p.stderr, (run, p.stderr)
                assert not any(key[0] == b for key in
                               sc.ledger_usage(s.ledger)), \
                    "run %d posted an unreplicated claim" % run
        finally:
            replica.proc.send_signal(signal.SIGCONT)
        p = s.once()
        assert p.returncode == 0, p.stderr
    finally:
        s.close()
    got = {(buyer, svc): rec["calls"]
           for (buyer, _d, svc), rec in sc.ledger_usage(s.ledger).items()
           if buyer == b}
    assert got == {(b, "svc-a"): calls}
    sc.ledger_check(s.ledger)


def test_settle_posts_a_claim_once_a_replica_has_it(start_nginx,
                                                    meter_upstream,
                                                    redis_cluster, tmp_path):
    # A claim the ledger has must outlive a failover: lost with its
    # primary, the usage hash would be back under its old name, claimed
    # and posted again.  With the buyer's replica frozen, toll-settle
    # leaves the claim in Redis and says so; thawed, it posts it once.
    _claim_held_while_frozen(start_nginx, meter_upstream, redis_cluster,
                             tmp_path, "claim", 4, 1)


def test_settle_recovered_claim_waits_for_the_replica(start_nginx,
                                                      meter_upstream,
                                                      redis_cluster,
                                                      tmp_path):
    # A claim found by a new toll-settle process (a restart, or a new
    # connection) was written by another connection.  WAIT promises only
    # the asking connection's writes, and as a connection's first command
    # it counts every replica connected, even a frozen one (Redis 7.0
    # happens to count from any earlier command, which here is the
    # claim's HGETALL; t/unit/test_toll_store.c checks the mark that makes
    # it hold by WAIT's contract).  The first run claims and stops at the
    # WAIT; the second, a new process with the replica still frozen, must
    # stop too.
    _claim_held_while_frozen(start_nginx, meter_upstream, redis_cluster,
                             tmp_path, "reclaim", 3, 2)


def test_frozen_replica_leaves_lookups_in_time(start_nginx, meter_upstream,
                                              redis_cluster):
    # With a primary's replica frozen, each meter flush to that primary
    # (a script per buyer) is followed by WAIT, which runs its whole
    # 50 ms; commands behind it on the connection wait with it.  One WAIT
    # in flight per connection, covering every durable answer before it,
    # keeps a key lookup on that primary within a WAIT or two.  A WAIT
    # per answer, 20 buyers' flushes in a row, would hold it a second, to
    # its timeout, which drops the connection (503).
    store = redis_cluster
    port = store.primary_of(0).port
    replica = store.replica_of(store.primary_of(0))
    ranges = [(lo, hi) for lo, hi, p, _ in store.slots_map() if p == port]

    def here(name):
        slot = key_slot("{%s}" % name)
        return any(lo <= slot <= hi for lo, hi in ranges)

    names = [b for b in sc.buyers("frozen", 100) if here(b)][:20]
    assert len(names) == 20, len(names)
    keys = sc.keys_for(store, names)
    fresh = []                  # keys on that primary, never looked up
    while len(fresh) < 15:
        key_id = gen_key_id()
        if here(key_id):
            fresh.append(raw_key(store.client(), key_id=key_id,
                                 owner=names[0]))

    ngx = _gate(start_nginx, meter_upstream, store, replicas=1)
    sc.warm([ngx], keys.values())

    stop = threading.Event()
    metered = []

    def load(j):
        i = 0
        while not stop.is_set():
            k = keys[names[(i * 4 + j) % len(names)]]
            r = sc.client.request(ngx.port, path="/svc-a/load%d" % i,
                                  headers=[k.bearer()])
            metered.append(r.status)
            i += 1

    threads = [threading.Thread(target=load, args=(j,)) for j in range(4)]
    took = []
    replica.proc.send_signal(signal.SIGSTOP)
    try:
        for t in threads:
            t.start()
        wait_for(lambda: "not on 1 replica(s)" in ngx.error_log_text(),
                 10, what="flushes to wait for the frozen replica")
        for key in fresh:
            t0 = time.monotonic()
            r = sc.client.request(ngx.port, path="/svc-a/new",
                                  headers=[key.bearer()])
            took.append(time.monotonic() - t0)
            assert r.status == 200, (r, r.body)
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
        replica.proc.send_signal(signal.SIGCONT)

    print("lookups behind WAITs: %s ms; %d metered calls"
          % ([round(x * 1000) for x in took], len(metered)))
    # timeout=1s: a lookup held until it would drop the connection fails
    assert max(took) < 0.5, took
    assert set(metered) == {200}, set(metered)
    assert "command timed out" not in ngx.error_log_text()
    ngx.stop()
    want = sc.expected_usage(meter_upstream, names)
    assert sc.redis_calls(store, names) == want
