"""Limits per buyer (toll_limit_key buyer, docs/limits.md "Per buyer").

All keys of one buyer count in one set of its plan's buckets, windows and
concurrency places, across nginx instances sharing a Redis; `key` (the
default) keeps each key's own.  Rates are slow (a window a minute) so
that nothing refills during a test.
"""

import json
import time

import pytest

from helpers import client
from helpers import jwt as J
from helpers.keys import raw_key, tollctl
from helpers.limits import (SlowUpstream, assert_config_refused,
                            check_limited, hold, policy, read_one,
                            send_only, state)
from helpers.procs import PROXY, free_port, wait_for
from helpers.upstream import header_values
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


# ------------------------------------------------ the buyer record's plan

def jwt_http(keys, extra=""):
    """JWTs whose plan claim is "plan", no toll_jwt_default_plan (which
    would name a plan for every token), buyer records on, short TTLs.  The
    plan a request got shows in RateLimit-Policy's q."""
    return "\n".join([
        keys.directives(),
        "    toll_jwt on;",
        "    toll_jwt_issuer %s;" % J.ISSUER,
        "    toll_jwt_audience %s;" % J.AUDIENCE,
        "    toll_jwt_plan_claim plan;",
        "    toll_plan free rate=100r/m;",
        "    toll_plan gold rate=500r/m;",
        "    toll_plan silver rate=300r/m;",
        "    toll_default_plan free;",
        "    toll_buyer_plan on;",
        "    toll_cache_ttl 2s;",
        "    toll_cache_negative_ttl 1s;",
        extra,
    ])


@pytest.fixture(scope="module")
def jkeys(tmp_path_factory):
    return J.Keys(tmp_path_factory.mktemp("jwtkeys"))


def jwt_get(ngx, jkeys, sub, path="/api/x", **claims):
    tok = J.token(jkeys, "RS256", J.claims(int(time.time()), sub=sub,
                                           **claims))
    return client.request(ngx.port, path=path,
                          headers=[("Authorization", "Bearer " + tok)])


def minute_q(r):
    assert r.status in (200, 429), (r, r.body)
    return policy(r)["minute"]["q"]


def test_redis_down_during_the_buyer_lookup(start_nginx, upstream,
                                            redis_server, jkeys):
    """Redis away: the caller is authenticated (a JWT needs no Redis) and
    gets the plan it would have without a buyer record, never a 503, and
    nothing is cached: once Redis is back, its record counts."""
    ngx = start_nginx(http_extra=jwt_http(jkeys), locations=BUYER,
                      redis_timeout="300ms")
    redis_server.kill()
    r = jwt_get(ngx, jkeys, "down-1")
    assert r.status == 200, (r, r.body)
    assert minute_q(r) == 100
    # frozen: the lookup times out, the same answer
    redis_server.start()
    redis_server.freeze()
    try:
        t0 = time.monotonic()
        r = jwt_get(ngx, jkeys, "down-2")
        took = time.monotonic() - t0
    finally:
        redis_server.thaw()
    assert r.status == 200 and minute_q(r) == 100, (r, r.body)
    assert took < 2.0, took
    assert "for its plan, the default plan applies" in ngx.error_log_text()
    tollctl(redis_server, "buyer", "set-plan", "down-2", "gold")

    def gold():
        return minute_q(jwt_get(ngx, jkeys, "down-2")) == 500
    wait_for(gold, 5, interval=0.1, what="the record read once Redis is back")


def test_client_leaving_while_parked(start_nginx, upstream, redis_server,
                                     jkeys):
    ngx = start_nginx(http_extra=jwt_http(jkeys), locations=BUYER,
                      redis_timeout="3s")
    tollctl(redis_server, "buyer", "set-plan", "leaver", "gold")
    tok = J.token(jkeys, "RS256", J.claims(int(time.time()), sub="leaver"))
    before = upstream.count
    redis_server.freeze()
    try:
        s = send_only(ngx.port, "/api/x",
                      [("Authorization", "Bearer " + tok)])
        time.sleep(0.3)
        s.close()
        # the request ends when the client leaves, not when Redis answers
        wait_for(lambda: '" 499 ' in ngx.read(ngx.prefix
                                               + "/logs/access.log"),
                 1.5, interval=0.05, what="a 499 while Redis is frozen")
    finally:
        redis_server.thaw()
    time.sleep(0.5)
    # the reply that came after the client left resumed nothing
    assert upstream.count == before
    text = ngx.error_log_text()
    assert "[alert]" not in text and "[crit]" not in text, text[-2000:]
    # the same buyer, parked again or cached, passes once with its plan
    r = jwt_get(ngx, jkeys, "leaver")
    assert r.status == 200 and minute_q(r) == 500, (r, r.body)
    assert upstream.count == before + 1


def test_jwt_plan_from_the_buyer_record(start_nginx, upstream, redis_server,
                                        jkeys):
    ngx = start_nginx(http_extra=jwt_http(jkeys), locations=BUYER)
    sub = "rec-buyer"
    # no record: the default plan; a token's own plan claim wins
    assert minute_q(jwt_get(ngx, jkeys, sub)) == 100
    assert minute_q(jwt_get(ngx, jkeys, sub, plan="silver")) == 300

    # set: effective once the negative entry (1 s) has gone
    doc = tollctl(redis_server, "buyer", "set-plan", sub, "gold").stdout
    assert json.loads(doc) == {"buyer": sub, "plan": "gold"}, doc
    t0 = time.monotonic()
    assert minute_q(jwt_get(ngx, jkeys, sub)) == 100
    wait_for(lambda: minute_q(jwt_get(ngx, jkeys, sub)) == 500, 3,
             interval=0.1, what="the plan set")
    assert time.monotonic() - t0 >= 0.8
    assert header_values(upstream.last, "X-Toll-Plan") == ["gold"]
    assert minute_q(jwt_get(ngx, jkeys, sub, plan="silver")) == 300

    # changed: effective once the entry (2 s) has gone, not before
    tollctl(redis_server, "buyer", "set-plan", sub, "silver")
    t0 = time.monotonic()
    assert minute_q(jwt_get(ngx, jkeys, sub)) == 500
    wait_for(lambda: minute_q(jwt_get(ngx, jkeys, sub)) == 300, 4,
             interval=0.1, what="the plan changed")
    assert time.monotonic() - t0 <= 2.5

    # cleared: the default plan again
    doc = tollctl(redis_server, "buyer", "clear-plan", sub).stdout
    assert json.loads(doc) == {"buyer": sub, "plan": None}, doc
    assert redis_server.client.hget("toll:buyer:{%s}" % sub, "plan") is None
    wait_for(lambda: minute_q(jwt_get(ngx, jkeys, sub)) == 100, 4,
             interval=0.1, what="the plan cleared")


def test_api_key_without_plan_takes_the_buyer_record(start_nginx, upstream,
                                                     redis_server, jkeys):
    ngx = start_nginx(http_extra=jwt_http(jkeys), locations=BUYER)
    tollctl(redis_server, "buyer", "set-plan", "acme-rec", "gold")
    bare = raw_key(redis_server, owner="acme-rec")
    own = raw_key(redis_server, owner="acme-rec", plan="silver")
    assert minute_q(get(ngx, bare)) == 500
    assert minute_q(get(ngx, own)) == 300
    # toll_limit_key buyer: the key without a plan shares the buyer's
    # gold window with the buyer's tokens; the silver key has its own
    assert state(get(ngx, bare))["minute"]["r"] == 498
    r = jwt_get(ngx, jkeys, "acme-rec")
    assert minute_q(r) == 500 and state(r)["minute"]["r"] == 497, r.headers


def test_buyer_plan_off_reads_no_record(start_nginx, upstream, redis_server,
                                        jkeys):
    ngx = start_nginx(http_extra=jwt_http(jkeys, "    toll_buyer_plan off;")
                      .replace("    toll_buyer_plan on;\n", ""),
                      locations=BUYER)
    tollctl(redis_server, "buyer", "set-plan", "acme-off", "gold")
    assert minute_q(jwt_get(ngx, jkeys, "acme-off")) == 100
    mon = redis_server.client.info("commandstats")
    assert "cmdstat_hget" not in mon, mon
