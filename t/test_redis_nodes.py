"""The adapter's table of nodes and its reconnects (issue 18, review).

A worker keeps one entry per address it has used (a Cluster's primaries
and seeds, MOVED and ASK targets, sentinels, the primary they name), each
with its map connection.  The table is bounded: an address that left the
map must give its entry back once nothing waits on it, or a worker that
followed a cluster whose addresses change (Kubernetes) for long enough
could follow it no more.  Fakes play the nodes (t/helpers/fake_redis.py).
"""

import time

import pytest

from helpers import client
from helpers.fake_redis import FakeNode, full_map, slots_then
from helpers.keys import gen_key_id, gen_secret
from helpers.procs import free_port

# ngx_http_toll_redis_int.h: 2 x (2 x 64 primaries + 16 seeds) + 1
NODES_MAX = 289


@pytest.fixture
def fake_nodes():
    made = []

    def make(*a, **kw):
        n = FakeNode(*a, **kw)
        made.append(n)
        return n
    yield make
    for n in made:
        n.close()


def _gated(ngx, n):
    token = "Bearer %s:%s" % (gen_key_id(), gen_secret())
    out = []
    for _ in range(n):
        r = client.request(ngx.port, path="/x",
                           headers=[("Authorization", token)])
        out.append(r.status)
    return out


def _map_of_new_addresses():
    """64 primaries (the most a map may name), each at an address never
    seen before where nothing listens."""
    step = 16384 // 64
    return [[i * step, i * step + step - 1,
             [b"127.0.0.1", free_port(), b"%040d" % i]] for i in range(64)]


def test_changing_addresses_give_entries_back(start_nginx, fake_nodes):
    # The seed answers each CLUSTER SLOTS with 64 primaries at new
    # addresses, none of which answers: each map is installed and read
    # again 250 ms later, and the addresses of the one before leave it.
    # Fifteen maps name over three times the table's size; then the map
    # names a node that answers, and the worker must still take it and
    # use it.
    state = {"churn": True, "maps": 0}
    target = fake_nodes(lambda args: Exception("ERR a fake"))

    def slots():
        if not state["churn"]:
            return full_map(target)
        state["maps"] += 1
        return _map_of_new_addresses()

    seed = fake_nodes(slots_then(slots,
                                 lambda args: Exception("ERR a fake")))
    ngx = start_nginx(redis_spec="cluster=" + seed.address,
                      redis_timeout="300ms")
    workers = ngx.worker_pids()

    deadline = time.monotonic() + 30
    while (state["maps"] * 64 < 3 * NODES_MAX * len(workers)
           and time.monotonic() < deadline):
        time.sleep(0.1)
    assert state["maps"] * 64 >= 3 * NODES_MAX * len(workers), state
    state["churn"] = False
    time.sleep(1.5)

    _gated(ngx, 10)

    log = ngx.error_log_text()
    full = [line for line in log.splitlines() if " nodes, " in line]
    assert not full, full[:3]
    assert any(c[0].upper() == b"HMGET" for c in target.commands), \
        "the last map was not used"
    assert ngx.worker_pids() == workers


def test_server_that_hangs_up_after_ping_is_not_hammered(start_nginx,
                                                         fake_nodes):
    # A server that answers PING and closes every connection: the worker
    # reconnects at once the first time (an idle timeout or a failover
    # looks like this), and backs off after that, not in a tight loop.
    n = fake_nodes(lambda args: Exception("ERR a fake"),
                   hangup_after_ping=True)
    ngx = start_nginx(redis_spec=n.address, redis_timeout="300ms")
    workers = ngx.worker_pids()
    time.sleep(1.5)
    before = n.accepted
    time.sleep(3)
    rate = (n.accepted - before) / 3.0 / len(workers)
    print("connections per second per worker: %.1f" % rate)
    # the backoff doubles to 1 s (a connection that lasts resets it),
    # plus one reconnect at once a second: about 2 a second per worker
    assert rate <= 3, rate
    assert ngx.worker_pids() == workers


def test_one_sentinel_named_twice(start_nginx, fake_nodes):
    # Two seeds that are one address are one node: the rotation through
    # the sentinels must not step past the ones that exist.
    s = fake_nodes(lambda args: Exception("ERR no such master"))
    ngx = start_nginx(redis_spec="sentinel=localhost:%d,127.0.0.1:%d "
                      "master=m" % (s.port, s.port), redis_timeout="300ms")
    workers = ngx.worker_pids()
    time.sleep(1.5)
    got = _gated(ngx, 5)
    assert set(got) == {503}, got
    asked = [c for c in s.commands if c[0].upper() == b"SENTINEL"]
    assert len(asked) >= 2, s.commands
    assert ngx.worker_pids() == workers
