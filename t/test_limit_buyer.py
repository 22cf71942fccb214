"""Limits per buyer (toll_limit_key buyer, docs/limits.md "Per buyer").

All keys of one buyer count in one set of its plan's buckets, windows and
concurrency places, across nginx instances sharing a Redis; `key` (the
default) keeps each key's own.  Rates are slow (a window a minute) so
that nothing refills during a test.
"""

import time

import pytest

from helpers import client
from helpers.keys import gen_key_id, raw_key
from helpers.limits import (SlowUpstream, assert_config_refused,
                            check_limited, hold, policy, read_one, state)
from helpers.procs import PROXY, free_port, wait_for
from helpers.workers import slow_locations


PLANS = """
    toll_limit_sync 100ms;
    toll_plan w6 rate=6r/m;
    toll_plan w4 rate=4r/m;
    toll_plan c1 concurrency=1;
"""

BUYER = """
        location /api/ {
            toll on;
            toll_limit_key buyer;
            %(proxy)s
        }
        location /bykey/ {
            toll on;
            %(proxy)s
        }
        location /explicit/ {
            toll on;
            toll_limit_key key;
            %(proxy)s
        }
        location /warm/ {
            toll on;
            toll_limit off;
            %(proxy)s
        }
""" % {"proxy": PROXY}


def get(ngx, key, path="/api/x"):
    return client.request(ngx.port, path=path, headers=[key.bearer()])


def rl_names(redis_server):
    return sorted(redis_server.client.scan_iter("toll:rl:*"))


def send_round(ngxs, keys, n, path="/api/x", pause=0.25):
    """n requests, taking the keys and the nodes in turn, each after the
    last round of the limit sync could carry the previous one over.
    Returns the statuses in order."""
    out = []
    for i in range(n):
        r = get(ngxs[i % len(ngxs)], keys[i % len(keys)], path)
        out.append(r.status)
        time.sleep(pause)
    return out


# ------------------------------------------------ unhappy paths first

@pytest.mark.parametrize("value", ["owner", "buyers", "on", ""])
def test_config_refuses_other_values(nginx_t, value):
    text = """
    toll_redis 127.0.0.1:%d;
    toll_zone 10m;
    server {
        listen 127.0.0.1:%d;
        location / {
            toll on;
            toll_limit_key "%s";
            return 200;
        }
    }
""" % (free_port(), free_port(), value)
    rc, out, text = nginx_t(text)
    assert_config_refused(rc, out, text, ('invalid value "%s"' % value,))


def test_buyer_id_that_is_a_key_id_does_not_share(start_nginx, upstream,
                                                  redis_server):
    """A buyer named like a key id, and one named like an address subject,
    never count in that key's or that address's limits."""
    ngx = start_nginx(http_extra=PLANS, locations=BUYER)
    victim = raw_key(redis_server, owner="someone", plan="w4")
    # a buyer whose id is the victim's key id, and one spelled as the
    # subject of an address and as a buyer subject of another plan
    twins = [raw_key(redis_server, owner=victim.key_id, plan="w4"),
             raw_key(redis_server, owner="ip:7f000001", plan="w4"),
             raw_key(redis_server, owner="b:w4:someone", plan="w4")]
    # the victim, limited per key, uses up its window
    assert [get(ngx, victim, "/bykey/x").status for _ in range(5)] \
        == [200] * 4 + [429]
    for twin in twins:
        # each twin buyer still has its whole window
        assert [get(ngx, twin).status for _ in range(5)] \
            == [200] * 4 + [429], twin.fields["owner"]
    # ... and the victim's window was not touched by them either way
    names = rl_names(redis_server)
    wait_for(lambda: len(rl_names(redis_server)) >= 4, 3,
             what="every subject synced")
    names = rl_names(redis_server)
    assert "toll:rl:{%s}" % victim.key_id in names, names
    assert "toll:rl:{b:w4:%s}" % victim.key_id in names, names
    assert "toll:rl:{b:w4:ip:7f000001}" in names, names
    assert "toll:rl:{b:w4:b:w4:someone}" in names, names


def test_key_mode_unchanged(start_nginx, upstream, redis_server):
    """Without toll_limit_key, or with `key`, each key of a buyer has its
    own window, named by its key id."""
    ngx = start_nginx(http_extra=PLANS, locations=BUYER)
    keys = [raw_key(redis_server, owner="acme-key", plan="w4")
            for _ in range(3)]
    for path in ("/bykey/x", "/explicit/y"):
        for k in keys:
            st = [get(ngx, k, path).status for _ in range(5)]
            if path == "/bykey/x":
                assert st == [200] * 4 + [429], (path, st)
            else:
                # the same key's window: the two locations share it
                assert st == [429] * 5, (path, st)
    wait_for(lambda: len(rl_names(redis_server)) >= 3, 3,
             what="the keys' subjects synced")
    assert rl_names(redis_server) == sorted(
        "toll:rl:{%s}" % k.key_id for k in keys)


def test_rate_limit_field_of_a_key_in_buyer_mode(start_nginx, upstream,
                                                 redis_server):
    """Per buyer, a key's own rate_limit does not resize its buyer's
    window (it would mix two sizes in one window): the plan's applies.
    Per key it still overrides the plan."""
    ngx = start_nginx(http_extra=PLANS, locations=BUYER)
    k = raw_key(redis_server, owner="acme-rl", plan="w4", rate_limit=2)
    other = raw_key(redis_server, owner="acme-rl", plan="w4")
    assert [get(ngx, k, "/bykey/x").status for _ in range(3)] \
        == [200, 200, 429]
    st = [get(ngx, k).status for _ in range(2)] \
        + [get(ngx, other).status for _ in range(3)]
    assert st == [200] * 4 + [429], st


# ------------------------------------------------ sharing

def test_three_keys_two_nodes_share_one_window(start_nginx, upstream,
                                               redis_server):
    ngxs = [start_nginx(http_extra=PLANS, locations=BUYER)
            for _ in range(2)]
    keys = [raw_key(redis_server, owner="acme-shared", plan="w6")
            for _ in range(3)]
    # another buyer on the same plan is not touched
    stranger = raw_key(redis_server, owner="acme-other", plan="w6")
    for n in ngxs:
        for k in keys + [stranger]:
            # cached, so that no lookup slows the rounds below
            assert get(n, k, "/warm/").status == 200
    st = send_round(ngxs, keys, 9)
    # per key, each would pass all 3 of its requests.  The second node
    # decides its first request of the buyer before it has heard of the
    # first node's (docs/limits.md, "Bound": (n - 1) x what one node
    # admits in a round, here one request)
    admitted = st.count(200)
    assert 6 <= admitted <= 7, st
    assert st[:6] == [200] * 6 and st[-2:] == [429] * 2, st
    time.sleep(0.5)
    for n in ngxs:
        for k in keys:
            # every key of the buyer, on every node: the buyer's window
            r = get(n, k)
            check_limited(r, policy_name="minute")
            assert policy(r) == {"minute": {"q": 6, "w": 60}}, r.headers
            assert state(r)["minute"]["r"] == 0, r.headers
    assert upstream.count == admitted + 2 * 4
    # the stranger has its whole window on both nodes
    st = send_round(ngxs, [stranger], 8)
    assert st[:6] == [200] * 6 and st[-1] == 429, st
    names = rl_names(redis_server)
    assert "toll:rl:{b:w6:acme-shared}" in names, names
    assert not any(k.key_id in n for n in names for k in keys), names


def test_two_plans_of_one_buyer_never_mix(start_nginx, upstream,
                                          redis_server):
    """Keys of one buyer on different plans count in one window per plan,
    each of its plan's size."""
    ngx = start_nginx(http_extra=PLANS, locations=BUYER)
    a = [raw_key(redis_server, owner="acme-two", plan="w4")
         for _ in range(2)]
    b = raw_key(redis_server, owner="acme-two", plan="w6")
    assert send_round([ngx], a, 5, pause=0) == [200] * 4 + [429]
    assert send_round([ngx], [b], 7, pause=0) == [200] * 6 + [429]


def test_concurrency_shared_by_the_keys_of_a_buyer(start_nginx, upstream,
                                                   redis_server):
    slow = SlowUpstream()
    try:
        locs = slow_locations(slow).replace(
            "toll on;", "toll on;\n            toll_limit_key buyer;")
        ngx = start_nginx(http_extra=PLANS, locations=locs)
        k1, k2, k3 = [raw_key(redis_server, owner="acme-conc", plan="c1")
                      for _ in range(3)]
        other = raw_key(redis_server, owner="acme-conc2", plan="c1")
        a = hold(ngx, slow, "/slow/hold/a", [k1.bearer()])
        for k in (k2, k3):
            r = client.request(ngx.port, path="/slow/fast",
                               headers=[k.bearer()])
            check_limited(r, code="concurrency_limited",
                          policy_name="concurrency")
        # another buyer has its own place
        b = hold(ngx, slow, "/slow/hold/b", [other.bearer()])
        slow.release()
        assert read_one(a).status == 200 and read_one(b).status == 200

        def passes():
            r = client.request(ngx.port, path="/slow/fast",
                               headers=[k3.bearer()])
            return r.status == 200
        wait_for(passes, 3, interval=0.05, what="the buyer's place back")
    finally:
        slow.close()
