"""The Redis Cluster and Sentinel harness itself (helpers/cluster.py).

The suites of issue 18 trust these helpers to say when a primary has
been replaced, when a slot has moved, when the sentinels have switched:
here each of those claims is checked against the servers themselves,
with a key written before the event and read after it.  Nothing of toll
runs here; these tests need only redis-server and redis-cli.
"""

import os
import time

import pytest

from helpers.cluster import NSLOTS, RedisSentinel, key_slot
from helpers.procs import wait_for

# nothing of toll to sanitize: under make test-asan these would only run
# Redis again (about 30 s of CI's 45 minutes)
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TOLL_PRELOAD")),
    reason="no toll program here; make test runs the harness's checks")


def test_cluster_up(redis_cluster):
    c = redis_cluster
    print("cluster start-up %.2fs" % c.startup_s)
    # start-up is paid once per module; keep it small for CI
    assert c.startup_s < 8, c.startup_s
    m = c.slots_map()
    assert sum(e - s + 1 for s, e, _, _ in m) == NSLOTS
    primaries = {p for _, _, p, _ in m}
    assert len(primaries) == 3, m
    replicas = {c.replica_of(c.node(p)).port for p in primaries}
    assert len(replicas) == 3 and not replicas & primaries, replicas
    for n in c.nodes:
        assert "cluster_state:ok" in n.r.execute_command("CLUSTER", "INFO")
        cfg = n.r.config_get("maxmemory-policy")
        assert cfg["maxmemory-policy"] == "noeviction"
        assert n.r.config_get("appendonly")["appendonly"] == "yes"
    spec = c.spec
    assert spec.startswith("cluster=") and spec.count(",") == 2, spec


def test_key_slot_matches_redis(redis_cluster):
    n = redis_cluster.nodes[0]
    for key in ("toll:usage:{buyer-1}:20260101", "toll:keys", "{}x",
                "a{b}c", "x{}{y}", "{{z}}"):
        assert key_slot(key) == n.r.execute_command(
            "CLUSTER", "KEYSLOT", key), key


def test_cluster_kill_primary_replica_promoted(redis_cluster):
    c = redis_cluster
    key = "toll:t:{kill-me}"
    rc = c.client()
    rc.set(key, "42")
    victim0 = c.primary_of(key)
    # the write reached the replica before the kill (WAIT on the primary)
    assert victim0.r.execute_command("WAIT", 1, 2000) == 1
    victim, heir, took = c.kill_primary(key)
    print("cluster failover after SIGKILL: %.2fs" % took)
    assert victim.port == victim0.port and not victim.alive()
    assert c.primary_of(key).port == heir.port
    assert heir.r.execute_command("ROLE")[0] == "master"
    assert c.client().get(key) == "42"
    # node timeout 1 s: detection + election stay within a few seconds
    assert took < 10, took
    c.revive()
    assert victim.alive()
    assert victim.r.execute_command("ROLE")[0] == "slave"
    assert c.client().get(key) == "42"


def test_cluster_reshard_one_slot(redis_cluster):
    c = redis_cluster
    keys = ["toll:t:{moving}:%d" % i for i in range(250)]
    rc = c.client()
    for k in keys:
        rc.set(k, k)
    slot = key_slot(keys[0])
    src = c.primary_of(slot)
    dst = [p for p in c.primaries() if p.port != src.port][0]
    asked = []

    def between():
        # mid-migration: a key already moved answers ASK from the source
        try:
            src.r.get(keys[0])
        except Exception as e:  # noqa: BLE001 -- the reply is the point
            asked.append(str(e))

    t0 = time.monotonic()
    c.reshard(slot, dst.port, batch=100, between=between)
    print("reshard of one slot with %d keys: %.2fs"
          % (len(keys), time.monotonic() - t0))
    assert asked and asked[0].startswith("ASK %d " % slot), asked
    assert c.primary_of(slot).port == dst.port
    for n in c.nodes:
        assert c.slots_map(n) == c.slots_map()
    assert dst.r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 250
    assert src.r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    with pytest.raises(Exception, match="MOVED %d " % slot):
        src.r.get(keys[0])
    assert dst.r.get(keys[0]) == keys[0]
    assert c.client().get(keys[-1]) == keys[-1]


def test_cluster_reshard_cli(redis_cluster):
    c = redis_cluster
    src, dst = c.primaries()[:2]
    moved = c.reshard_cli(src.port, dst.port, 2)
    assert len(moved) == 2, moved
    for s in moved:
        assert c.primary_of(s).port == dst.port


def test_sentinel_quiet_after_start(tmp_path):
    """Nothing fails over on its own: for 3 s after start-up no sentinel
    takes the primary for down (a sentinel PINGs each instance once a
    second, so a down-after of 1 s made the first PING's reply late at
    start and two sentinels could vote a failover the tests never asked
    for; money writes then wait for a replica for seconds)."""
    s = RedisSentinel(tmp_path)
    try:
        p0 = s.primary()
        t_end = time.monotonic() + 3
        flagged = set()
        while time.monotonic() < t_end:
            for sn in s.sentinels:
                m = sn.safe("SENTINEL", "MASTER", s.master) or []
                flags = dict(zip(m[::2], m[1::2])).get("flags", "")
                if flags != "master":
                    flagged.add((sn.port, flags))
            time.sleep(0.02)
        assert not flagged, flagged
        assert s.primary() is p0
        for sn in s.sentinels:
            with open(sn.log) as f:
                log = f.read()
            assert "+sdown master" not in log, log
    finally:
        s.stop()


def test_sentinel_up_and_failover(redis_sentinel):
    s = redis_sentinel
    print("sentinel start-up %.2fs" % s.startup_s)
    assert s.startup_s < 5, s.startup_s
    assert s.spec.startswith("sentinel=") and s.spec.endswith(
        " master=toll"), s.spec
    p0 = s.primary()
    assert p0.r.execute_command("ROLE")[0] == "master"
    s.client().set("toll:t:{fo}", "7")
    assert p0.r.execute_command("WAIT", 1, 2000) == 1

    old, new, took = s.failover()
    print("SENTINEL FAILOVER: new primary named after %.2fs" % took)
    assert old is p0 and new is not p0
    for sn in s.sentinels:
        assert s.primary_port(sn) == new.port
    assert new.r.execute_command("ROLE")[0] == "master"
    assert old.r.execute_command("ROLE")[0] == "slave"
    assert s.client().get("toll:t:{fo}") == "7"
    assert s.client().connection_pool.connection_kwargs["port"] == new.port


def test_sentinel_kill_primary(redis_sentinel):
    s = redis_sentinel
    s.client().set("toll:t:{kp}", "9")
    assert s.primary().r.execute_command("WAIT", 1, 2000) == 1
    old, new, took = s.kill_primary()
    print("sentinel failover after SIGKILL: %.2fs" % took)
    assert not old.alive()
    assert new.r.execute_command("ROLE")[0] == "master"
    assert s.client().get("toll:t:{kp}") == "9"
    # down-after 2 s, then the vote and the promotion
    assert took < 15, took
    s.revive()
    assert old.r.execute_command("ROLE")[0] == "slave"
    wait_for(lambda: old.r.get("toll:t:{kp}") == "9", 5,
             what="revived node to have the key")
