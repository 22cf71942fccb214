"""toll on a Sentinel-managed Redis (issue 18): the single-Redis
exactness checks and failovers under load.

One primary, one replica and three sentinels serve the module (conftest's
redis_sentinel, down-after 2 s); the checks are helpers/store_checks.py's,
shared with t/test_cluster.py.
"""

import time

from helpers import store_checks as sc
from helpers.meter import meter_upstream

assert meter_upstream  # a fixture, used by name

KIND = "sentinel"


def test_meter_equals_upstream(start_nginx, meter_upstream, redis_sentinel):
    sc.meter_exact(start_nginx, meter_upstream, redis_sentinel)


def test_free_tier_never_above_n(start_nginx, meter_upstream,
                                 redis_sentinel):
    sc.free_tier_capped(start_nginx, meter_upstream, redis_sentinel)


def test_strict_limit_exact(start_nginx, meter_upstream, redis_sentinel):
    sc.strict_limit_exact(start_nginx, meter_upstream, redis_sentinel)


def test_prepaid_never_overdrawn(start_nginx, meter_upstream,
                                 redis_sentinel):
    sc.prepaid_exact(start_nginx, meter_upstream, redis_sentinel)


def test_settle_exactly_once(start_nginx, meter_upstream, redis_sentinel,
                             tmp_path):
    sc.settle_exact(start_nginx, meter_upstream, redis_sentinel, tmp_path)


def test_tollctl_keys(redis_sentinel):
    sc.tollctl_keys(redis_sentinel)


def test_failover_under_load(start_nginx, meter_upstream, redis_sentinel,
                             tmp_path):
    s = redis_sentinel

    def event(names):
        t0 = time.monotonic()
        old, new, took = s.failover()
        print("SENTINEL FAILOVER %d -> %d, named after %.2fs"
              % (old.port, new.port, took))
        return t0, t0 + took

    sc.fault_under_load(start_nginx, meter_upstream, s, tmp_path, event,
                        "sentinel failover")


def test_primary_killed_under_load(start_nginx, meter_upstream,
                                   redis_sentinel, tmp_path):
    s = redis_sentinel

    def event(names):
        # With replicas=1 (the default on a Sentinel) money writes need a
        # replica: the promoted primary has none until the killed one is
        # back as its replica, and calls that need a new lease are 503
        # until then.  The event ends when a replica is back.
        t0 = time.monotonic()
        old, new, took = s.kill_primary()
        print("sentinel primary %d SIGKILLed, %d named after %.2fs"
              % (old.port, new.port, took))
        s.revive()
        print("... and back as its replica after %.2fs"
              % (time.monotonic() - t0))
        return t0, time.monotonic()

    try:
        sc.fault_under_load(start_nginx, meter_upstream, s, tmp_path,
                            event, "sentinel primary SIGKILL")
    finally:
        s.revive()
