"""The exactness checks of the single-Redis suites, for any store (issue 18).

t/test_cluster.py and t/test_sentinel.py run these against a Redis
Cluster and a Sentinel-managed primary (helpers/cluster.py): `store` is a
RedisCluster or RedisSentinel (.spec, .client(), .as_redis()).  One
store serves a whole module, so every check names its own buyers (a
random suffix) and compares only what is theirs.

    meter_exact         meter = upstream, per buyer and service, 2 nodes
    free_tier_capped    free tier never above N across 2 nodes
    strict_limit_exact  a strict plan admits exactly its limit, 2 nodes
    prepaid_exact       a balance of 1.00 at 0.05 pays exactly 20 calls
    settle_exact        toll-settle posts each call exactly once
    tollctl_keys        tollctl key create/show/revoke on the store
    fault_under_load    an event (a primary killed, a slot moved, a
                        failover) during load: upstream = meter = ledger,
                        no balance overdrawn, 503s only in the event's
                        window
"""

import concurrent.futures
import secrets
import threading
import time

from helpers import client
from helpers.balance import credit, invariant
from helpers.keys import make_key, raw_key, redis_name, tollctl
from helpers.meter import (Load, meter_http, micros, project, proxy_to,
                           upstream_block, usage)
from helpers.procs import wait_for
from helpers.settle import (Settle, ledger_check, ledger_usage,
                            redis_usage_left)

PRICE = "0.05"
PROXY_M = proxy_to("meterapi")
REDIS_TIMEOUT_S = 0.5

LOCATIONS = """
        location /warm/ {
            toll on;
            %(p)s
        }
        location /svc-a/ {
            toll on;
            toll_service svc-a provider=acme price=0.05;
            %(p)s
        }
        location /svc-b/ {
            toll on;
            toll_service svc-b provider=globex price=1.234567;
            %(p)s
        }
        location /free/ {
            toll on;
            toll_service free provider=acme price=0.05 free_calls=5;
            %(p)s
        }
        location /paid/ {
            toll on;
            toll_prepaid on;
            toll_service paid provider=acme price=0.05;
            %(p)s
        }
        location /strict/ {
            toll on;
            %(p)s
        }
        location = /ping {
            return 200 "pong\\n";
        }
""" % {"p": PROXY_M}

PRICES = {"svc-a": micros("0.05"), "svc-b": micros("1.234567"),
          "free": micros("0.05"), "paid": micros("0.05")}

HTTP_EXTRA = """
    toll_limit_sync 100ms;
    toll_plan strict100 rate=100r/h strict;
"""


def buyers(prefix, n):
    tag = secrets.token_hex(3)
    return ["%s-%s-%d" % (prefix, tag, i) for i in range(n)]


def start_gates(start_nginx, up, store, n=2):
    return [start_nginx(http_extra=meter_http() + HTTP_EXTRA
                        + upstream_block("meterapi", up.port, keepalive=64),
                        locations=LOCATIONS, redis_spec=store.spec,
                        redis_timeout="%dms" % (REDIS_TIMEOUT_S * 1000))
            for _ in range(n)]


def new_ledger(store):
    """The store is shared by a module's tests, each with a ledger of its
    own: the binding of the store to the test before's ledger
    (docs/settle.md, one ledger per Redis) is removed first."""
    store.client().delete("toll:settle:ledger")


def keys_for(store, names, plan=None):
    """Key records written straight into the store (the module's tests
    must not wait for tollctl)."""
    return {b: raw_key(store.client(), owner=b, plan=plan) for b in names}


def warm(ngxs, keys):
    for ngx in ngxs:
        for k in keys:
            r = client.request(ngx.port, path="/warm/x",
                               headers=[k.bearer()])
            assert r.status == 200, (r, r.body)


def mine(u, names):
    return {k: v for k, v in u.items() if k[0] in names}


def expected_usage(up, names, services=PRICES):
    """What the upstream received, as the meter must hold it."""
    out = {}
    for (b, s), n in up.counts().items():
        if b in names and s in services:
            out[(b, s)] = n
    return out


def redis_calls(store, names, field="calls"):
    u = project(usage(store.client()), {"calls", "free_calls",
                                        "paid_calls", "amount_micros"})
    return {k: v[field] for k, v in mine(u, names).items()}


def blast(ngxs, key, path, n, threads=24):
    """n calls spread over the gates, `threads` at a time: statuses."""
    def one(i):
        return client.request(ngxs[i % len(ngxs)].port, path=path,
                              headers=[key.bearer()]).status
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        return list(ex.map(one, range(n)))


# ------------------------------------------------------ the exact checks


def meter_exact(start_nginx, up, store):
    ngxs = start_gates(start_nginx, up, store)
    names = buyers("meter", 3)
    keys = keys_for(store, names)
    warm(ngxs, keys.values())
    i = 0
    for b in names:
        for s, n in (("svc-a", 7), ("svc-b", 4)):
            for _ in range(n):
                r = client.request(ngxs[i % 2].port, path="/%s/q%d" % (s, i),
                                   headers=[keys[b].bearer()])
                assert r.status == 200, (r, r.body)
                i += 1
    for ngx in ngxs:
        ngx.stop()          # a graceful stop flushes what is left
    want = expected_usage(up, names)
    assert want == {(b, s): n for b in names
                    for s, n in (("svc-a", 7), ("svc-b", 4))}
    assert redis_calls(store, names) == want
    amounts = redis_calls(store, names, "amount_micros")
    assert amounts == {k: n * PRICES[k[1]] for k, n in want.items()}


def free_tier_capped(start_nginx, up, store, n_free=5, calls=40):
    ngxs = start_gates(start_nginx, up, store)
    b = buyers("free", 1)[0]
    k = keys_for(store, [b])[b]
    warm(ngxs, [k])
    statuses = blast(ngxs, k, "/free/x", calls)
    assert statuses.count(200) == calls, statuses
    for ngx in ngxs:
        ngx.stop()
    rec = project(usage(store.client()))[(b, "free")]
    print("free tier across 2 gates: %d free of %d calls (N = %d)"
          % (rec["free_calls"], rec["calls"], n_free))
    assert rec["calls"] == calls == up.counts()[(b, "free")]
    assert rec["free_calls"] <= n_free, rec
    assert rec["paid_calls"] == calls - rec["free_calls"]
    assert rec["amount_micros"] == rec["paid_calls"] * PRICES["free"]
    claimed = store.client().hget("toll:free:{%s}" % b, "free")
    assert claimed is None or int(claimed) <= n_free, claimed


def strict_limit_exact(start_nginx, up, store, limit=100, calls=250):
    ngxs = start_gates(start_nginx, up, store)
    b = buyers("strict", 1)[0]
    # not warmed: every call of the key counts against its window
    k = keys_for(store, [b], plan="strict100")[b]
    before = up.total
    statuses = blast(ngxs, k, "/strict/x", calls)
    ok = statuses.count(200)
    print("strict plan across 2 gates: %d admitted of %d, limit %d"
          % (ok, calls, limit))
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    assert ok == limit, ok
    assert up.total - before == ok


def prepaid_exact(start_nginx, up, store, reps=3):
    ngxs = start_gates(start_nginx, up, store)
    names = buyers("prepaid", reps)
    keys = keys_for(store, names)
    warm(ngxs, keys.values())
    for b in names:
        credit(store.client(), b, micros("1.00"))
        statuses = blast(ngxs, keys[b], "/paid/x", 150)
        assert (statuses.count(200), statuses.count(402)) == (20, 130), \
            (b, sorted(set(statuses)))
        assert up.counts().get((b, "paid")) == 20
    for ngx in ngxs:
        ngx.stop()          # leases go back
    for b in names:
        bal = invariant(store.client(), b)
        assert bal.get("held", 0) == 0 and bal.get("available", 0) == 0 \
            and bal.get("spent") == micros("1.00"), bal


def settle_exact(start_nginx, up, store, tmp_path):
    ngxs = start_gates(start_nginx, up, store)
    names = buyers("settle", 2)
    keys = keys_for(store, names)
    warm(ngxs, keys.values())
    new_ledger(store)
    s = Settle(None, tmp_path / "ledger.db", redis_spec=store.spec)
    daemon = s.start(interval="100ms")
    try:
        for i in range(60):
            b = names[i % 2]
            r = client.request(ngxs[i % 2].port, path="/svc-a/x",
                               headers=[keys[b].bearer()])
            assert r.status == 200
        for ngx in ngxs:
            ngx.stop()
        drained(store, names)
        assert s.stop(daemon) == 0, Settle.log_text(daemon)
        # a second pass finds nothing more to post
        p = s.once()
        assert p.returncode == 0, p.stderr
    finally:
        s.close()
    got = {(b, svc): rec["calls"]
           for (b, _d, svc), rec in ledger_usage(s.ledger).items()
           if b in names}
    assert got == expected_usage(up, names)
    ledger_check(s.ledger)


def drained(store, names, timeout=30):
    def empty():
        left = redis_usage_left(store.client())
        return not any(k[0] in names for k in left)
    wait_for(empty, timeout, interval=0.1, what="usage drained")


def tollctl_keys(store):
    """tollctl key create / show / revoke through the store's spec; the
    record and the index are in two slots (no MULTI across them)."""
    import json
    view = store.as_redis()
    k = make_key(view, owner=buyers("ctl", 1)[0], redis_spec=store.spec)
    rc = store.client()
    assert rc.hget(redis_name(k.key_id), "status") == "active"
    assert k.key_id in rc.smembers("toll:keys")
    doc = json.loads(tollctl(view, "key", "show", k.key_id,
                             redis_spec=store.spec).stdout)
    assert doc["key_id"] == k.key_id
    tollctl(view, "key", "revoke", k.key_id, redis_spec=store.spec)
    assert rc.hget(redis_name(k.key_id), "status") == "revoked"


# --------------------------------------------------- faults under load


class Timeline:
    """Every answer's status with the time it came back."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows = []

    def __call__(self, i, path, headers, r):
        with self.lock:
            self.rows.append((time.monotonic(), r.status, path))

    def count(self, status, t0=None, t1=None):
        with self.lock:
            return sum(1 for t, s, _ in self.rows if s == status
                       and (t0 is None or t >= t0)
                       and (t1 is None or t <= t1))


def fault_under_load(start_nginx, up, store, tmp_path, event, label,
                     before_s=1.0, after_s=1.0):
    """Two gates under load from 3 buyers (postpaid svc-a and a prepaid
    service with a balance the load cannot exhaust); `event()` runs in
    the middle, given the buyers' names, and returns (t_start, t_end) of
    its window (monotonic).
    Then the gates stop, toll-settle drains, and:

        upstream = Redis usage = ledger, per buyer and service
        the prepaid balance: spent = upstream x price, available >= 0
        503s: printed; none outside [t_start, t_end + timeout + slack]
    """
    ngxs = start_gates(start_nginx, up, store)
    names = buyers("load", 3)
    keys = keys_for(store, names)
    for b in names:
        credit(store.client(), b, micros("1000.00"))
    warm(ngxs, keys.values())
    order = [keys[b] for b in names]
    tl = Timeline()

    def make(i, n):
        k = order[(i + n) % len(order)]
        return ("/svc-a/x" if n % 2 else "/paid/x"), [k.bearer()]

    loads = [Load(ngx.port, make, threads=2, on_response=tl).start()
             for ngx in ngxs]
    try:
        time.sleep(before_s)        # pacing the load, deciding nothing
        t0, t1 = event(names)
        time.sleep(after_s)
    finally:
        for ld in loads:
            ld.stop()
    statuses = {}
    for ld in loads:
        for s, n in ld.statuses.items():
            statuses[s] = statuses.get(s, 0) + n
        assert not ld.failures, ld.failures[:5]
    # a 503 is the gate saying the store did not answer within its
    # timeout: fair while a primary is gone (node timeout + election) or
    # the sentinels have not yet switched, and only then; the slack
    # covers the module noticing the new map/primary (one MOVED or one
    # re-ask) on a loaded 2-core machine
    slack = REDIS_TIMEOUT_S + 0.5
    during = tl.count(503, t0, t1 + slack)
    outside = tl.count(503) - during
    print("%s: event window %.2fs, answers %r, 503 during the event %d, "
          "503 outside it %d" % (label, t1 - t0, statuses, during, outside))
    assert set(statuses) <= {200, 503}, statuses
    assert outside == 0, (outside, statuses)
    assert statuses.get(200, 0) > 0

    for ngx in ngxs:
        ngx.stop()
    want = expected_usage(up, names)
    assert redis_calls(store, names) == want, "meter differs from upstream"

    new_ledger(store)
    s = Settle(None, tmp_path / "ledger.db", redis_spec=store.spec)
    try:
        for _ in range(20):
            p = s.once()
            assert p.returncode == 0, p.stderr
            left = redis_usage_left(store.client())
            if not any(k[0] in names for k in left):
                break
        drained(store, names, timeout=5)
    finally:
        s.close()
    got = {(b, svc): rec["calls"]
           for (b, _d, svc), rec in ledger_usage(s.ledger).items()
           if b in names}
    assert got == want, "ledger differs from upstream"
    ledger_check(s.ledger)
    for b in names:
        bal = invariant(store.client(), b)
        served = up.counts().get((b, "paid"), 0)
        assert bal.get("held", 0) == 0, bal
        assert bal.get("available", 0) >= 0, bal
        assert bal.get("spent", 0) == served * PRICES["paid"], (bal, served)
    return statuses, during
