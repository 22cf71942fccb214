"""toll on a Redis Cluster (issue 18): the single-Redis exactness checks
and the faults of a cluster under load.

One 3-primary, 3-replica cluster serves the module (conftest's
redis_cluster, cluster-node-timeout 1 s); every check names its own
buyers.  The checks themselves are helpers/store_checks.py's, shared
with t/test_sentinel.py.

Under load, after each event: upstream = Redis usage = ledger per buyer
and service, no balance overdrawn (spent = upstream x price, available
>= 0), and the 503s counted during the event are printed; none may come
outside the event's window (plus the gate's timeout and a slack).
"""

import time

from helpers import store_checks as sc
from helpers.cluster import key_slot
from helpers.meter import meter_upstream

assert meter_upstream  # a fixture, used by name

KIND = "cluster"


def test_meter_equals_upstream(start_nginx, meter_upstream, redis_cluster):
    sc.meter_exact(start_nginx, meter_upstream, redis_cluster)


def test_free_tier_never_above_n(start_nginx, meter_upstream, redis_cluster):
    sc.free_tier_capped(start_nginx, meter_upstream, redis_cluster)


def test_strict_limit_exact(start_nginx, meter_upstream, redis_cluster):
    sc.strict_limit_exact(start_nginx, meter_upstream, redis_cluster)


def test_prepaid_never_overdrawn(start_nginx, meter_upstream, redis_cluster):
    sc.prepaid_exact(start_nginx, meter_upstream, redis_cluster)


def test_settle_exactly_once(start_nginx, meter_upstream, redis_cluster,
                             tmp_path):
    sc.settle_exact(start_nginx, meter_upstream, redis_cluster, tmp_path)


def test_tollctl_keys(redis_cluster):
    sc.tollctl_keys(redis_cluster)


def test_primary_killed_under_load(start_nginx, meter_upstream,
                                   redis_cluster, tmp_path):
    c = redis_cluster

    def event(names):
        # the primary holding the first buyer's usage, key and balance.
        # With replicas=1 (the default on a Cluster) money writes need a
        # replica: the promoted primary has none until the killed node is
        # back as its replica, and calls that need a new lease are 503
        # until then.  The event ends when a replica is back.
        t0 = time.monotonic()
        victim, heir, took = c.kill_primary("{%s}" % names[0])
        print("killed %d, %d promoted after %.2fs"
              % (victim.port, heir.port, took))
        c.revive()
        print("... and back as its replica after %.2fs"
              % (time.monotonic() - t0))
        return t0, time.monotonic()

    try:
        sc.fault_under_load(start_nginx, meter_upstream, c, tmp_path,
                            event, "cluster primary SIGKILL")
    finally:
        c.revive()


def test_slot_migrated_under_load(start_nginx, meter_upstream,
                                  redis_cluster, tmp_path):
    c = redis_cluster

    def event(names):
        slot = key_slot("{%s}" % names[0])
        dst = [p for p in c.primaries()
               if p.port != c.primary_of(slot).port][0]
        t0 = time.monotonic()
        # one key at a time, 50 ms apart: the gates meet ASK (keys
        # already moved) and then MOVED (the slot's new owner)
        c.reshard(slot, dst.port, batch=1,
                  between=lambda: time.sleep(0.05))
        assert c.primary_of(slot).port == dst.port
        return t0, time.monotonic()

    sc.fault_under_load(start_nginx, meter_upstream, c, tmp_path, event,
                        "cluster slot migration")
