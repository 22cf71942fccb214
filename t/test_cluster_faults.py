"""Malformed slot maps and redirections fail cleanly (issue 18).

A fake Redis (a thread speaking RESP on a loopback port) plays a cluster
node that lies: CLUSTER SLOTS answered with garbage, MOVED to a node
nothing listens on, MOVED back and forth between two fakes, ASK back and
forth.  The gate configured with `toll_redis cluster=<fake>` must answer
every gated call 503 store_unavailable within its timeout + 50 ms, its
workers must live on (conftest reads the error log for alerts and
crashes), and tollctl `--redis cluster=<fake>` must exit non-zero with a
message naming the store.
"""

import subprocess
import time

import pytest

from helpers import client
from helpers.cluster import key_slot
from helpers.fake_redis import (FakeNode, Raw, command_slot,
                                full_map, slots_then)
from helpers.keys import gen_key_id, gen_secret, tollctl_path
from helpers.procs import free_port

TIMEOUT_S = 0.3
MARGIN_S = 0.050


# the garbage CLUSTER SLOTS replies; everything else is answered MOVED to
# the fake itself, so nothing can succeed through it
GARBAGE = {
    "wrong_types": lambda n: [[b"zero", b"x", [b"127.0.0.1", b"p"]]],
    "slot_99999": lambda n: [[0, 99999, [b"127.0.0.1", n.port, b"id"]]],
    "reversed": lambda n: [[16383, 0, [b"127.0.0.1", n.port, b"id"]]],
    "overlap": lambda n: [[0, 9000, [b"127.0.0.1", n.port, b"a"]],
                          [8000, 16383, [b"127.0.0.1", free_port(), b"b"]]],
    "empty": lambda n: [],
    "not_array": lambda n: b"CLUSTER SLOTS",
    "error": lambda n: Exception("ERR This instance has cluster support "
                                 "disabled"),
    "no_node": lambda n: [[0, 16383]],
    "node_no_port": lambda n: [[0, 16383, [b"127.0.0.1"]]],
    "negative_port": lambda n: [[0, 16383, [b"127.0.0.1", -1, b"id"]]],
    "huge": lambda n: [[i, i, [b"127.0.0.1", n.port, b"id"]]
                       for i in range(16384)] * 4,
    "truncated": lambda n: Raw(b"*3\r\n*3\r\n:0\r\n"),
    "nested_deep": lambda n: Raw(b"*1\r\n" * 2000 + b":1\r\n"),
}


def scenario(name):
    """[FakeNode] for a scenario; the first is the seed."""
    if name in GARBAGE:
        holder = []

        def moved_self(args):
            return Exception("MOVED %d %s" % (command_slot(args),
                                              holder[0].address))
        n = FakeNode(slots_then(lambda: GARBAGE[name](holder[0]),
                                moved_self))
        holder.append(n)
        return [n]
    if name == "moved_unreachable":
        dead = "127.0.0.1:%d" % free_port()
        holder = []
        n = FakeNode(slots_then(
            lambda: full_map(holder[0]),
            lambda a: Exception("MOVED %d %s" % (command_slot(a), dead))))
        holder.append(n)
        return [n]
    if name == "moved_unresolvable":
        holder = []
        n = FakeNode(slots_then(
            lambda: full_map(holder[0]),
            lambda a: Exception("MOVED %d no-such-host.invalid:6379"
                                % command_slot(a))))
        holder.append(n)
        return [n]
    if name in ("moved_loop", "ask_loop"):
        kind = "MOVED" if name == "moved_loop" else "ASK"
        pair = []

        def to(i):
            return lambda a: Exception("%s %d %s" % (
                kind, command_slot(a), pair[1 - i].address))
        a = FakeNode(slots_then(lambda: full_map(pair[0]), to(0)))
        pair.append(a)
        b = FakeNode(slots_then(lambda: full_map(pair[1]), to(1)))
        pair.append(b)
        return pair
    raise KeyError(name)


SCENARIOS = sorted(GARBAGE) + ["moved_unreachable", "moved_unresolvable",
                               "moved_loop", "ask_loop"]


@pytest.fixture
def fakes(request):
    made = []

    def make(name):
        nodes = scenario(name)
        made.extend(nodes)
        return nodes
    yield make
    for n in made:
        n.close()


# ------------------------------------------------------------ the tests


def test_fake_speaks_resp(fakes):
    """The fake itself (runs today): redis-cli reads its lies as sent."""
    n = fakes("moved_loop")[0]
    r = subprocess.run(["/usr/bin/redis-cli", "-p", str(n.port), "GET",
                        "toll:key:{x}"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=10)
    assert b"MOVED %d" % key_slot("toll:key:{x}") in r.stdout, r.stdout
    r = subprocess.run(["/usr/bin/redis-cli", "-p", str(n.port), "CLUSTER",
                        "SLOTS"], stdout=subprocess.PIPE, timeout=10)
    assert b"16383" in r.stdout and str(n.port).encode() in r.stdout


@pytest.mark.parametrize("name", SCENARIOS)
def test_gate_answers_503_in_time(start_nginx, fakes, name):
    seed = fakes(name)[0]
    ngx = start_nginx(redis_spec="cluster=" + seed.address,
                      redis_timeout="%dms" % (TIMEOUT_S * 1000))
    workers = ngx.worker_pids()
    token = "Bearer %s:%s" % (gen_key_id(), gen_secret())
    took = []
    for _ in range(6):
        t = time.monotonic()
        r = client.request(ngx.port, path="/x",
                           headers=[("Authorization", token)])
        took.append(time.monotonic() - t)
        assert r.status == 503, (name, r.status, r.body)
        assert r.json()["code"] == "store_unavailable", r.body
    print("%s: gated calls answered 503 in %s ms" % (
        name, [round(x * 1000) for x in took]))
    assert max(took) <= TIMEOUT_S + MARGIN_S, (name, took)
    # the workers lived through it (a crash would also be in the log)
    assert ngx.worker_pids() == workers
    assert client.request(ngx.port, path="/ping").status == 200


@pytest.mark.parametrize("name", SCENARIOS)
def test_tollctl_fails_cleanly(fakes, name):
    seed = fakes(name)[0]
    t = time.monotonic()
    r = subprocess.run([tollctl_path(), "--redis", "cluster=" + seed.address,
                        "--json", "key", "show", gen_key_id()],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    took = time.monotonic() - t
    err = r.stderr.decode(errors="replace")
    print("%s: tollctl exit %d in %.2fs: %s" % (name, r.returncode, took,
                                                err.strip()))
    assert r.returncode not in (0,) and r.returncode < 128, r.returncode
    assert err.startswith("tollctl: ") and err.count("\n") <= 3, err
    assert "redis" in err.lower() or "cluster" in err.lower(), err
    assert took < 15, took
