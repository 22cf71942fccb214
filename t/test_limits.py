"""Rate limits on one nginx: buckets, windows, concurrency, per-address
limits, headers, refusals, dry run, configuration, and Redis.

The contract is /tmp/limits_spec.md (docs/limits.md).  Timing: rates are
slow (a token every 10 or 20 s) wherever the test is about counts, so that
refill during a test is nil; where refill is the point (the oracle, the
window edge, Retry-After) the schedule keeps every expected count at least
0.4 of a token away from a rounding edge, and bursts are sent on
connections opened beforehand so that they take milliseconds.
"""

import math
import re
import threading
import time

import pytest

from helpers import client
from helpers.keys import gen_key_id, gen_secret, raw_key, redis_name
from helpers.limits import (IETF, LIMIT_LOG_HTTP, XRL, Conn, Monitor,
                            SlowUpstream, Volley, assert_config_refused,
                            check_limited, count, fire, hold, make_key_rl,
                            one_int, policy, rate_headers, read_one,
                            request_from, sleep_until_wall, state, statuses,
                            wait_limit_log)
from helpers.problem import check_problem
from helpers.procs import PROXY, free_port, wait_for
from helpers.workers import slow_locations


API = """
        location /api/ {
            toll on;
            %(proxy)s
        }
        location /warm/ {
            toll on;
            toll_limit off;
            %(proxy)s
        }
        location = /ping {
            return 200 "pong\\n";
        }
""" % {"proxy": PROXY}


def get(ngx, key=None, path="/api/x", headers=()):
    h = list(headers)
    if key is not None:
        h.append(key.bearer())
    return client.request(ngx.port, path=path, headers=h)


def warm(ngx, key):
    """Caches the key through a gated location without limits, so that
    the requests under test do not wait on a key lookup."""
    r = get(ngx, key, "/warm/x")
    assert r.status == 200, (r, r.body)
    assert not rate_headers(r), r.headers


def rl_name(subject):
    return "toll:rl:{%s}" % subject


# ---------------------------------------------------- 1. the oracle

# bursts of 10 (to each location) at these offsets, seconds; expected
# admissions worked out for R = 2/s, B = 5 from the first request of the
# first burst: every level is n + 0.5 tokens, or a full bucket
ORACLE_AT = [0.0, 1.25, 2.75, 4.25, 7.5, 8.25, 9.25]
ORACLE_TOLL = [5, 2, 3, 3, 5, 1, 2]
ORACLE_LIMIT_REQ = [6, 2, 3, 3, 6, 1, 2]


@pytest.mark.slow
def test_bucket_against_limit_req(start_nginx, upstream, redis_server):
    """The same arrivals at toll's bucket and at nginx's limit_req with
    the same rate and burst: per burst they differ by at most one (toll
    admits B on a full bucket where limit_req admits B + 1)."""
    ngx = start_nginx(workers=1, http_extra="""
    toll_plan oracle rate=120r/m burst=5;
    limit_req_zone $binary_remote_addr zone=oracle:1m rate=120r/m;
""", locations=API + """
        location /lr/ {
            limit_req zone=oracle burst=5 nodelay;
            limit_req_status 429;
            %s
        }
""" % PROXY)
    k = raw_key(redis_server, owner="oracle", plan="oracle")
    warm(ngx, k)
    upstream.reset()
    ct, cl = Conn(ngx.port), Conn(ngx.port)
    rows = []
    start = time.time() + 0.3
    first = last = None
    try:
        for at in ORACLE_AT:
            sleep_until_wall(start + at)
            nt = nl = 0
            for _ in range(10):
                t = time.time()
                rt = ct.get("/api/x", [k.bearer()])
                rl = cl.get("/lr/x", [k.bearer()])
                assert rt.status in (200, 429), (rt, rt.body)
                assert rl.status in (200, 429), (rl, rl.body)
                if rt.status == 200:
                    nt += 1
                    first = first if first is not None else t
                    last = t
                nl += rl.status == 200
            rows.append((round(time.time() - start, 2), nt, nl))
    finally:
        ct.close()
        cl.close()
    print("\noracle (offset, toll, limit_req): %r" % rows)
    toll = [r[1] for r in rows]
    lreq = [r[2] for r in rows]
    assert toll[0] == 5 and lreq[0] == 6, rows
    for _, a, b in rows:
        assert abs(a - b) <= 1, rows
    assert abs(sum(toll) - sum(lreq)) <= len(rows), rows
    # and against the arithmetic itself, one either way per burst (the
    # schedule held if limit_req did what the arithmetic says)
    for got, want in zip(lreq, ORACLE_LIMIT_REQ):
        assert abs(got - want) <= 1, (lreq, ORACLE_LIMIT_REQ)
    for got, want in zip(toll, ORACLE_TOLL):
        assert abs(got - want) <= 1, (toll, ORACLE_TOLL)
    assert abs(sum(toll) - sum(ORACLE_TOLL)) <= 1, (toll, ORACLE_TOLL)
    # never more than the bucket plus what the rate refilled meanwhile
    assert sum(toll) <= 5 + 2 * (last - first) + 1, (rows, last - first)
    assert upstream.count == sum(toll) + sum(lreq)


# ------------------------------------------ 2. a window under a crowd

@pytest.mark.slow
def test_window_400_concurrent(start_nginx, upstream, redis_server):
    """400 requests at once at a window of 100 a minute: 100 pass, 300
    get 429, and only the 100 reach the upstream; 20 times over."""
    ngx = start_nginx(http_extra="    toll_plan w100 rate=100r/m;",
                      locations=API)
    seen = []
    t0 = time.monotonic()
    for rep in range(20):
        k = raw_key(redis_server, owner="crowd%d" % rep, plan="w100")
        before = upstream.count
        resps = fire(ngx.port, 400, "/api/x", [k.bearer()])
        ok, limited = count(resps, 200), count(resps, 429)
        seen.append(ok)
        assert ok + limited == 400, sorted(set(statuses(resps)))
        assert ok <= 100, (rep, ok)
        assert ok == 100, (rep, ok)
        assert upstream.count - before == ok, (upstream.count - before, ok)
        check_limited(next(r for r in resps if r.status == 429),
                      policy_name="minute")
    print("\n400 at once, window 100/min, admitted per run: %r in %.1f s"
          % (seen, time.monotonic() - t0))


# ------------------------------------------------- 3. window edges

@pytest.mark.slow
def test_window_edges(start_nginx, upstream, redis_server):
    """2N just before a second boundary and 2N just after: N in all, as
    both lie within one second; a full window plus one slot after the
    first burst, N more pass (refused requests counted nothing)."""
    n = 20
    ngx = start_nginx(http_extra="    toll_plan w20 rate=%dr/s;" % n,
                      locations=API)
    for attempt in range(3):
        k = raw_key(redis_server, owner="edge%d" % attempt, plan="w20")
        warm(ngx, k)
        before = upstream.count
        req = [("/api/x", [k.bearer()])] * (2 * n)
        v1, v2, v3 = (Volley(ngx.port, req) for _ in range(3))
        now = time.time()
        boundary = math.floor(now) + 1
        if boundary - now < 0.5:
            boundary += 1
        sleep_until_wall(boundary - 0.3)
        r1 = v1.go()
        r1_done = time.time()
        sleep_until_wall(boundary + 0.1)
        r2 = v2.go()
        if time.time() - v1.sent_at > 0.9:
            # the machine stalled: the bursts are not within one second
            v3.close()
            continue
        a1, a2 = count(r1, 200), count(r2, 200)
        assert count(r1, 429) + a1 == 2 * n and count(r2, 429) + a2 == 2 * n
        assert a1 + a2 <= n, (a1, a2)
        assert a1 == n and a2 == 0, (a1, a2)
        check_limited(next(r for r in r2 if r.status == 429),
                      policy_name="second")
        # every admission was at or before r1_done: one window and one
        # slot (25 ms) later the window is empty again; 150 ms of margin
        sleep_until_wall(r1_done + 1.0 + 1.0 / 40 + 0.15)
        r3 = v3.go()
        print("\nwindow edge: %d + %d admitted around the boundary, %d "
              "after %.3f s" % (a1, a2, count(r3, 200),
                                v3.sent_at - r1_done))
        assert count(r3, 200) == n, statuses(r3)
        assert upstream.count - before == a1 + a2 + count(r3, 200)
        return
    pytest.fail("three attempts stalled for more than 0.9 s")


# --------------------------------------------- 4. path spellings

SPELLINGS = ["/api/x", "//api/x", "/api//x", "/./api/x", "/%61pi/x",
             "/api/./x", "/api/../api/x", "/api/x/", "/api/%78",
             "/api/x?y=1", "/other/x", "//other/./x"]


def test_path_spellings_share_one_bucket(start_nginx, upstream,
                                         redis_server):
    ngx = start_nginx(http_extra="    toll_plan ps rate=6r/m burst=5;",
                      locations=API + """
        location /other/ {
            toll on;
            %s
        }
""" % PROXY)
    for order in (SPELLINGS, SPELLINGS[::-1]):
        k = raw_key(redis_server, owner="spell", plan="ps")
        warm(ngx, k)
        before = upstream.count
        got = []
        for path in order:
            r = get(ngx, k, path)
            assert r.status in (200, 429), (path, r, r.body)
            got.append((path, r.status))
        admitted = [p for p, s in got if s == 200]
        assert len(admitted) == 5, got
        assert admitted == order[:5], got
        assert upstream.count - before == 5


# ---------------------------------- 5. forwarded headers and the address

def forged(i):
    return [("X-Forwarded-For", "10.0.%d.%d" % (i // 250, i % 250 + 1)),
            ("X-Real-IP", "10.1.0.%d" % (i + 1)),
            ("Forwarded", "for=10.2.0.%d;proto=https" % (i + 1)),
            ("True-Client-IP", "10.3.0.%d" % (i + 1)),
            ("CF-Connecting-IP", "10.4.0.%d" % (i + 1))]


def test_limit_ip_ignores_forwarded_headers(start_nginx, upstream,
                                            redis_server):
    ngx = start_nginx(http_extra="    toll_plan ipp rate=6r/m burst=5;",
                      locations="""
        location /api/ {
            toll on;
            toll_limit_ip ipp;
            %s
        }
""" % PROXY)
    k = raw_key(redis_server, owner="behind-nat")     # no plan: no key limit
    res = [get(ngx, k, headers=forged(i)) for i in range(12)]
    assert statuses(res) == [200] * 5 + [429] * 7, statuses(res)
    assert upstream.count == 5
    assert policy(res[0]) == {"ip-burst": {"q": 5, "w": 50}}, res[0].headers
    assert state(res[0])["ip-burst"]["r"] == 4, res[0].headers
    doc = check_limited(res[5], policy_name="ip-burst")
    assert 9 <= doc["retry_after"] <= 10, doc
    # counted before authentication: no credentials, still 429
    check_limited(get(ngx, None, headers=forged(99)),
                  policy_name="ip-burst")
    # the subject is the connection's address: another one has its own
    other = [request_from(ngx.port, "127.0.0.2", "/api/x",
                          [k.bearer()] + forged(i)) for i in range(7)]
    assert statuses(other) == [200] * 5 + [429] * 2, statuses(other)
    log = ngx.error_log_text()
    assert re.search(r'\[error\] .*toll: limited, policy "ip-burst" of plan '
                     r'"ipp", address "127\.0\.0\.1"', log), log[-2000:]
    assert not re.search(r'address "10\.', log), log[-2000:]


# ------------------------------- 6. per address, unauthenticated only

def test_limit_ip_unauthenticated(start_nginx, upstream, redis_server):
    ngx = start_nginx(http_extra="    toll_plan guess rate=6r/m burst=5;",
                      locations="""
        location /api/ {
            toll on;
            toll_limit_ip guess unauthenticated;
            %s
        }
""" % PROXY)
    good = raw_key(redis_server, owner="good")
    # valid keys do not count against the address
    for _ in range(10):
        assert get(ngx, good).status == 200
    mon = Monitor(redis_server)
    try:
        bad_ids = [gen_key_id() for _ in range(12)]
        res = [get(ngx, headers=[("X-API-Key", kid + ":" + gen_secret())])
               for kid in bad_ids]
        sts = statuses(res)
        assert sts == [401] * 5 + [429] * 7, sts
        for r in res[:5]:
            check_problem(r, 401, "unauthorized")
        check_limited(res[5], policy_name="ip-burst")
        mon.sync()
        seen = mon.text()
        # the five that were allowed to fail were looked up; the seven
        # refused by the address limit cost Redis nothing
        for kid in bad_ids[:5]:
            assert redis_name(kid) in seen, kid
        for kid in bad_ids[5:]:
            assert kid not in seen, (kid, [l for l in seen.splitlines()
                                           if kid in l])
    finally:
        mon.close()
    # a cached valid key still passes from the limited address
    r = get(ngx, good)
    assert r.status == 200, (r, r.body)
    assert upstream.count == 11


# ------------------------------------------------------- 7. reload

def test_reload_keeps_limits(start_nginx, upstream, redis_server):
    ngx = start_nginx(http_extra="""
    toll_plan w5 rate=5r/m;
    toll_plan b3 rate=3r/m burst=3;""", locations=API)
    kw = raw_key(redis_server, owner="reload-w", plan="w5")
    kb = raw_key(redis_server, owner="reload-b", plan="b3")
    assert [get(ngx, kw).status for _ in range(6)] == [200] * 5 + [429]
    assert [get(ngx, kb).status for _ in range(4)] == [200] * 3 + [429]
    ngx.reload(wait_old_exit=True)
    for _ in range(2):
        check_limited(get(ngx, kw), policy_name="minute")
        check_limited(get(ngx, kb), policy_name="burst")
    assert upstream.count == 8


# -------------------------------------------------- 8. concurrency







def test_concurrency_cap(start_nginx, upstream, redis_server):
    slow = SlowUpstream()
    try:
        ngx = start_nginx(http_extra="    toll_plan c2 concurrency=2;",
                          locations=slow_locations(slow))
        k = raw_key(redis_server, owner="conc", plan="c2")
        hdr = [k.bearer()]
        r = get(ngx, k, "/slow/fast")
        assert r.status == 200, (r, r.body)
        assert policy(r) == {"concurrency": {"q": 2}}, r.headers
        assert state(r) == {"concurrency": {"r": 1}}, r.headers

        def idle():
            # a request passes and finds no other in flight
            r = get(ngx, k, "/slow/fast")
            return r.status == 200 and state(r) == {"concurrency": {"r": 1}}

        # two in flight, the third is refused at once
        a = hold(ngx, slow, "/slow/hold/a", hdr)
        b = hold(ngx, slow, "/slow/hold/b", hdr)
        assert slow.held() == 2
        fast_before = slow.count(lambda p: "fast" in p)
        r = get(ngx, k, "/slow/fast")
        doc = check_limited(r, code="concurrency_limited",
                            policy_name="concurrency")
        assert state(r) == {"concurrency": {"r": 0}}, r.headers
        assert slow.count(lambda p: "fast" in p) == fast_before
        print("\nconcurrency refusal: %r" % doc)

        # they end: room again
        slow.release()
        assert read_one(a).status == 200 and read_one(b).status == 200
        wait_for(idle, 3, interval=0.05, what="both places given back")

        # a client that leaves gives its place back
        slow.hold()
        a = hold(ngx, slow, "/slow/hold/a2", hdr)
        b = hold(ngx, slow, "/slow/hold/b2", hdr)
        assert slow.held() == 2
        check_limited(get(ngx, k, "/slow/fast"), code="concurrency_limited",
                      policy_name="concurrency")
        a.close()
        t0 = time.monotonic()
        r = wait_for(lambda: (lambda r: r if r.status == 200 else None)(
            get(ngx, k, "/slow/fast")), 5, interval=0.05,
            what="the aborted request's place to come back")
        print("place given back %.0f ms after the client left"
              % ((time.monotonic() - t0) * 1000))
        # b2 is still held: the place that came back was a2's, and b2's
        # still counts
        assert state(r) == {"concurrency": {"r": 0}}, r.headers
        c = hold(ngx, slow, "/slow/hold/c2", hdr)
        check_limited(get(ngx, k, "/slow/fast"), code="concurrency_limited",
                      policy_name="concurrency")
        slow.release()
        assert read_one(b).status == 200 and read_one(c).status == 200
        wait_for(idle, 3, interval=0.05, what="every place given back")
    finally:
        slow.close()


# ------------------------------------------------------- 9. headers

HEADER_PLANS = """
    toll_plan hb rate=6r/m burst=4 rate=100r/h;
    toll_plan bo rate=6r/m burst=5;
    toll_plan two rate=3r/s rate=100r/m;
    toll_plan wo rate=30r/m;
"""


def test_headers_on_200(start_nginx, upstream, redis_server):
    ngx = start_nginx(http_extra=HEADER_PLANS, locations=API)
    k = raw_key(redis_server, owner="hdr", plan="hb")
    warm(ngx, k)
    for i in range(1, 5):
        before = time.time()
        r = get(ngx, k)
        after = time.time()
        assert r.status == 200, (r, r.body)
        assert policy(r) == {"burst": {"q": 4, "w": 40},
                             "hour": {"q": 100, "w": 3600}}, r.headers
        st = state(r)
        assert set(st) == {"burst", "hour"}, st
        assert st["burst"]["r"] == 4 - i, (i, st)
        assert st["burst"]["t"] in (10 * i - 1, 10 * i), (i, st)
        assert st["hour"]["r"] == 100 - i, (i, st)
        # the oldest counted request leaves one hour, plus at most one
        # slot (90 s) of rounding, after it came
        assert 3599 <= st["hour"]["t"] <= 3691, st
        assert one_int(r, "X-RateLimit-Limit") == 100
        assert one_int(r, "X-RateLimit-Remaining") == 100 - i
        reset = one_int(r, "X-RateLimit-Reset")
        assert before + 3599 - 1 <= reset <= after + 3691 + 1, (reset,
                                                              before)
        assert abs(reset - (before + st["hour"]["t"])) <= 2, (reset, st)
        assert one_int(r, "X-RateLimit-Burst-Limit") == 4
        assert one_int(r, "X-RateLimit-Burst-Remaining") == 4 - i

    # a plan without a window: X-RateLimit-* is the bucket
    kb = raw_key(redis_server, owner="hdr-b", plan="bo")
    before = time.time()
    r = get(ngx, kb)
    after = time.time()
    assert r.status == 200
    assert policy(r) == {"burst": {"q": 5, "w": 50}}, r.headers
    assert state(r)["burst"]["r"] == 4, r.headers
    assert one_int(r, "X-RateLimit-Limit") == 6
    assert one_int(r, "X-RateLimit-Remaining") == 4
    assert one_int(r, "X-RateLimit-Burst-Remaining") == 4
    assert before - 1 <= one_int(r, "X-RateLimit-Reset") <= after + 51

    # two windows: X-RateLimit-* is the one with the fewest left
    kt = raw_key(redis_server, owner="hdr-t", plan="two")
    res = [get(ngx, kt) for _ in range(4)]
    assert statuses(res) == [200, 200, 200, 429], statuses(res)
    for i, r in enumerate(res[:3], 1):
        assert policy(r) == {"second": {"q": 3, "w": 1},
                             "minute": {"q": 100, "w": 60}}, r.headers
        assert state(r)["second"]["r"] == 3 - i
        assert state(r)["minute"]["r"] == 100 - i
        assert one_int(r, "X-RateLimit-Limit") == 3
        assert one_int(r, "X-RateLimit-Remaining") == 3 - i
        assert r.header_all("X-RateLimit-Burst-Limit") == []
        assert r.header_all("X-RateLimit-Burst-Remaining") == []
    check_limited(res[3], policy_name="second")

    # a window alone: no Burst-* headers
    kw = raw_key(redis_server, owner="hdr-w", plan="wo")
    r = get(ngx, kw)
    assert r.status == 200
    assert policy(r) == {"minute": {"q": 30, "w": 60}}, r.headers
    assert one_int(r, "X-RateLimit-Limit") == 30
    assert one_int(r, "X-RateLimit-Remaining") == 29
    assert r.header_all("X-RateLimit-Burst-Limit") == []


def test_headers_on_429(start_nginx, upstream, redis_server):
    """A refusal carries both families, and shows what the refused
    request did not count: the bucket empty, the window as it was."""
    ngx = start_nginx(http_extra=HEADER_PLANS, locations=API)
    k = raw_key(redis_server, owner="hdr429", plan="hb")
    assert [get(ngx, k).status for _ in range(4)] == [200] * 4
    r = get(ngx, k)
    check_limited(r, policy_name="burst")
    assert 9 <= int(r.header("Retry-After")) <= 10, r.headers
    assert policy(r) == {"burst": {"q": 4, "w": 40},
                         "hour": {"q": 100, "w": 3600}}, r.headers
    st = state(r)
    assert st["burst"]["r"] == 0 and st["hour"]["r"] == 96, st
    assert one_int(r, "X-RateLimit-Remaining") == 96
    assert one_int(r, "X-RateLimit-Limit") == 100
    assert one_int(r, "X-RateLimit-Burst-Remaining") == 0
    assert one_int(r, "X-RateLimit-Burst-Limit") == 4

    # and a second refusal says the same: nothing was counted
    r = get(ngx, k)
    check_limited(r, policy_name="burst")
    assert state(r)["hour"]["r"] == 96, r.headers
    assert upstream.count == 4


def test_upstream_rate_headers_are_replaced(start_nginx, upstream,
                                           redis_server):
    fake = free_port()
    ngx = start_nginx(http_extra=HEADER_PLANS + """
    server {
        listen 127.0.0.1:%d;
        location / {
            add_header X-RateLimit-Limit 999 always;
            add_header X-RateLimit-Remaining 998 always;
            add_header X-RateLimit-Reset 1 always;
            add_header X-RateLimit-Burst-Limit 997 always;
            add_header X-RateLimit-Burst-Remaining 996 always;
            add_header RateLimit '"upstream";r=1;t=1' always;
            add_header RateLimit-Policy '"upstream";q=1;w=1' always;
            return 200 "upstream\\n";
        }
    }""" % fake, locations=API + """
        location /fake/ {
            toll on;
            proxy_pass http://127.0.0.1:%d;
        }
""" % fake)
    k = raw_key(redis_server, owner="fake", plan="hb")
    direct = client.request(fake, path="/x")
    assert direct.header("X-RateLimit-Limit") == "999"   # the stand-in works
    r = get(ngx, k, "/fake/x")
    assert r.status == 200 and r.body == b"upstream\n", (r, r.body)
    for name in IETF + XRL:
        assert len(r.header_all(name)) == 1, (name, r.headers)
    assert one_int(r, "X-RateLimit-Limit") == 100
    assert one_int(r, "X-RateLimit-Remaining") == 99
    assert one_int(r, "X-RateLimit-Reset") > 1000000000
    assert one_int(r, "X-RateLimit-Burst-Limit") == 4
    assert one_int(r, "X-RateLimit-Burst-Remaining") == 3
    assert "upstream" not in state(r) and "upstream" not in policy(r)


@pytest.mark.parametrize("setting,families", [
    ("off", ()),
    ("ietf", (IETF,)),
    ("x-ratelimit", (XRL,)),
    ("ietf x-ratelimit", (IETF, XRL)),
])
def test_limit_headers_setting(start_nginx, upstream, redis_server,
                               setting, families):
    ngx = start_nginx(http_extra=HEADER_PLANS
                      + "    toll_limit_headers %s;" % setting,
                      locations=API)
    k = raw_key(redis_server, owner="fam", plan="hb")
    want = set(n for f in families for n in f)
    res = [get(ngx, k) for _ in range(5)]
    assert statuses(res) == [200] * 4 + [429]
    for r in res:
        assert set(rate_headers(r)) == want, (setting, r.headers)
    check_limited(res[4], policy_name="burst")


# ---------------------------------------------------- 10. refusals

FAST = dict(http_extra="    toll_plan fast rate=60r/m burst=2;",
            locations=API + """
        location /api503/ {
            toll on;
            toll_limit_status 503;
            %s
        }
""" % PROXY)


def test_refusal_and_retry_after(start_nginx, upstream, redis_server):
    """The problem answer, and a retry after Retry-After seconds (here 1:
    a token a second) is admitted."""
    ngx = start_nginx(**FAST)
    k = raw_key(redis_server, owner="fast", plan="fast")
    warm(ngx, k)
    upstream.reset()
    assert [get(ngx, k).status for _ in range(2)] == [200, 200]
    r = get(ngx, k)
    doc = check_limited(r, 429, policy_name="burst")
    assert doc["title"] == "Too Many Requests", doc
    assert doc["retry_after"] == 1, doc
    assert upstream.count == 2
    # the contract: never earlier than the moment a retry can succeed
    time.sleep(int(r.header("Retry-After")))
    r2 = get(ngx, k)
    assert r2.status == 200, (r2, r2.headers)
    assert upstream.count == 3


def test_refused_requests_consume_nothing(start_nginx, upstream,
                                          redis_server):
    """Hammered at 10 times its rate, a bucket still refills at its rate
    and its tokens go to the hammer; one and a half tokens' time after the
    last admission, exactly one request passes."""
    ngx = start_nginx(**FAST)
    k = raw_key(redis_server, owner="hammer", plan="fast")
    warm(ngx, k)
    upstream.reset()
    assert [get(ngx, k).status for _ in range(3)] == [200, 200, 429]
    hammer = []
    t_end = time.time() + 2.0
    nxt = time.time()
    while time.time() < t_end:
        sleep_until_wall(nxt)
        nxt += 0.1
        t = time.time()
        hammer.append((t, get(ngx, k).status))
    admitted = [t for t, s in hammer if s == 200]
    assert set(s for _, s in hammer) <= {200, 429}, hammer
    # about two tokens came in those 2 s
    assert 1 <= len(admitted) <= 3, hammer
    last = admitted[-1]
    sleep_until_wall(max(last + 1.5, hammer[-1][0] + 0.05))
    burst = [get(ngx, k).status for _ in range(5)]
    assert burst == [200] + [429] * 4, (burst, hammer)
    assert upstream.count == 2 + len(admitted) + 1


def test_limit_status_503(start_nginx, upstream, redis_server):
    ngx = start_nginx(**FAST)
    k = raw_key(redis_server, owner="fast503", plan="fast")
    res = [get(ngx, k, "/api503/x") for _ in range(3)]
    assert statuses(res)[:2] == [200, 200]
    doc = check_limited(res[2], 503, policy_name="burst")
    assert doc["status"] == 503
    assert upstream.count == 2


# --------------------------------------------- 11. dry run, variable

STATUS_LOG_HTTP = """
    toll_plan dry rate=6r/m burst=2;
    toll_plan ent unlimited;
    toll_limit_log_level warn;
""" + LIMIT_LOG_HTTP


def send_tagged(ngx, key, path):
    h = [key.bearer()] if key is not None else []
    r, t = client.tagged_request(ngx.port, h, path)
    return r, wait_limit_log(ngx, t)


def test_dry_run_and_limit_status(start_nginx, upstream, redis_server):
    ngx = start_nginx(http_extra=STATUS_LOG_HTTP, locations=API + """
        location /dry/ {
            toll on;
            toll_limit dry_run;
            %s
        }
""" % PROXY)
    # dry run: nothing refused, headers sent, would-be refusals logged
    kd = raw_key(redis_server, owner="dry", plan="dry")
    got = []
    for _ in range(5):
        r, line = send_tagged(ngx, kd, "/dry/x")
        assert r.status == 200, (r, r.body)
        assert policy(r) == {"burst": {"q": 2, "w": 20}}, r.headers
        got.append(line["ls"])
    assert got == ["PASSED"] * 2 + ["REJECTED_DRY_RUN"] * 3, got
    assert upstream.count == 5
    dry_lines = [l for l in ngx.error_log_text().splitlines()
                 if kd.key_id in l and "toll: limited" in l]
    assert len(dry_lines) == 3, dry_lines
    for l in dry_lines:
        assert re.search(r'\[warn\] .*toll: limited( \(dry run\))?, policy '
                         r'"burst" of plan "dry", key id "%s"' % kd.key_id,
                         l), l

    # on: PASSED then REJECTED, logged at the configured level
    kn = raw_key(redis_server, owner="real", plan="dry")
    seq = [send_tagged(ngx, kn, "/api/x") for _ in range(3)]
    assert [r.status for r, _ in seq] == [200, 200, 429]
    assert [l["ls"] for _, l in seq] == ["PASSED", "PASSED", "REJECTED"]
    lines = [l for l in ngx.error_log_text().splitlines()
             if kn.key_id in l and "toll: limited" in l]
    assert len(lines) == 1, lines
    assert re.search(r'\[warn\] .*toll: limited, policy "burst" of plan '
                     r'"dry", key id "%s"' % kn.key_id, lines[0]), lines

    # a plan without limits, and a key without plan nor default plan
    for key in (raw_key(redis_server, owner="big", plan="ent"),
                raw_key(redis_server, owner="none")):
        for _ in range(3):
            r, line = send_tagged(ngx, key, "/api/x")
            assert r.status == 200
            assert line["ls"] == "UNLIMITED", line
            assert not rate_headers(r), r.headers

    # not evaluated: limits off, or authentication failed
    r, line = send_tagged(ngx, kn, "/warm/x")
    assert r.status == 200 and line["ls"] in ("", "-"), line
    r, line = send_tagged(ngx, None, "/api/x")
    assert r.status == 401 and line["ls"] in ("", "-"), line
    assert not rate_headers(r), r.headers


# ------------------------------- 12. default plan, rate_limit override

def test_default_plan_and_rate_limit_override(start_nginx, upstream,
                                              redis_server):
    ngx = start_nginx(http_extra="""
    toll_plan def rate=3r/m;
    toll_plan bk rate=60r/m burst=3;
    toll_plan win rate=100r/m;
    toll_plan conc concurrency=5;
    toll_default_plan def;""", locations=API)

    def run(key, n_ok, pol, refused_policy):
        res = [get(ngx, key) for _ in range(n_ok + 1)]
        assert statuses(res) == [200] * n_ok + [429], (key, statuses(res))
        assert policy(res[0]) == pol, (key, res[0].headers)
        return check_limited(res[-1], policy_name=refused_policy)

    minute3 = {"minute": {"q": 3, "w": 60}}
    # no plan, and a plan that is not configured: the default plan
    run(raw_key(redis_server, owner="noplan"), 3, minute3, "minute")
    run(raw_key(redis_server, owner="oddplan", plan="nosuch"), 3, minute3,
        "minute")
    # rate_limit: a bucket's rate becomes N a minute, burst kept
    doc = run(make_key_rl(redis_server, "bk-rl", "bk", 2), 3,
              {"burst": {"q": 3, "w": 90}}, "burst")
    assert 29 <= doc["retry_after"] <= 30, doc
    doc = run(make_key_rl(redis_server, "bk", "bk"), 3,
              {"burst": {"q": 3, "w": 3}}, "burst")
    assert doc["retry_after"] == 1, doc
    # a per-minute window becomes N
    run(make_key_rl(redis_server, "win-rl", "win", 3), 3, minute3, "minute")
    # a plan with neither gets a window of N a minute
    run(make_key_rl(redis_server, "conc-rl", "conc", 2), 2,
        {"minute": {"q": 2, "w": 60}, "concurrency": {"q": 5}}, "minute")
    # no plan, rate_limit: the default plan's window becomes N
    run(make_key_rl(redis_server, "def-rl", None, 4), 4,
        {"minute": {"q": 4, "w": 60}}, "minute")


def test_rate_limit_without_any_plan(start_nginx, upstream, redis_server):
    ngx = start_nginx(locations=API)
    k = make_key_rl(redis_server, "alone", None, 2)
    res = [get(ngx, k) for _ in range(3)]
    assert statuses(res) == [200, 200, 429], statuses(res)
    assert policy(res[0]) == {"minute": {"q": 2, "w": 60}}, res[0].headers
    check_limited(res[2], policy_name="minute")
    # neither plan nor rate_limit: not limited
    free = make_key_rl(redis_server, "free")
    res = [get(ngx, free) for _ in range(6)]
    assert statuses(res) == [200] * 6
    assert not rate_headers(res[0]), res[0].headers


# ----------------------------------------------------- 13. nginx -t

def limits_http(extra="", location=""):
    return """
    toll_redis 127.0.0.1:%d timeout=500ms;
    toll_zone 10m;
    %s
    server {
        listen 127.0.0.1:%d;
        location / {
            toll on;
            %s
            return 200;
        }
    }
""" % (free_port(), extra, free_port(), location)


CONFIG_ERRORS = {
    "rate_word": ("toll_plan p rate=abc;", "", ("invalid rate",
                                                "rate=abc")),
    "rate_unit": ("toll_plan p rate=10r/x;", "", ("invalid rate",
                                                  "rate=10r/x")),
    "rate_zero": ("toll_plan p rate=0r/s;", "", ("invalid rate",
                                                 "rate=0r/s")),
    "rate_no_r": ("toll_plan p rate=10/s;", "", ("invalid rate",
                                                 "rate=10/s")),
    "burst_without_rate": ("toll_plan p burst=5;", "", ("burst",)),
    "burst_before_rate": ("toll_plan p burst=5 rate=10r/s;", "",
                          ("burst",)),
    "burst_invalid": ("toll_plan p rate=10r/s burst=abc;", "",
                      ("burst=abc", "invalid burst")),
    "window_unit_twice": ("toll_plan p rate=10r/m rate=20r/m;", "",
                          ("rate=20r/m", "window", "duplicate", "twice",
                           "minute")),
    "two_bursts": ("toll_plan p rate=10r/m burst=5 rate=100r/h burst=10;",
                   "", ("burst=10", "bucket", "two bursts", "duplicate",
                        "twice", 'more than one "burst"')),
    "unknown_param": ("toll_plan p rate=10r/s speed=3;", "", ("speed=3",)),
    "no_params": ("toll_plan p;", "", ("toll_plan", '"p"')),
    "unlimited_with_rate": ("toll_plan p unlimited rate=10r/m;", "",
                            ("unlimited",)),
    "rate_with_unlimited": ("toll_plan p rate=10r/m unlimited;", "",
                            ("unlimited",)),
    "plan_twice": ("toll_plan twin rate=1r/s;\n    toll_plan twin "
                   "rate=2r/s;", "", ("twin",)),
    "default_plan_unknown": ("toll_plan p rate=1r/s;\n    "
                             "toll_default_plan nosuch;", "", ("nosuch",)),
    "limit_ip_unknown": ("toll_plan p rate=1r/s;", "toll_limit_ip nosuch;",
                         ("nosuch",)),
    "limit_ip_bad_flag": ("toll_plan p rate=1r/s;",
                          "toll_limit_ip p sometimes;", ("sometimes",)),
    "status_low": ("", "toll_limit_status 399;", ("399", "400 and 599")),
    "status_high": ("", "toll_limit_status 600;", ("600", "400 and 599")),
    "status_word": ("", "toll_limit_status many;",
                    ("many", '"toll_limit_status" directive invalid')),
    "limit_bad": ("", "toll_limit maybe;", ("maybe",)),
    "headers_bad": ("toll_limit_headers json;", "", ("json",)),
    "sync_bad": ("toll_limit_sync soon;", "",
                 ("soon", '"toll_limit_sync" directive invalid')),
    "log_level_bad": ("toll_limit_log_level debug;", "", ("debug",)),
}


def test_config_good(nginx_t):
    rc, out, text = nginx_t(limits_http("""
    toll_plan free rate=60r/m burst=10;
    toll_plan basic rate=600r/m burst=100 rate=10000r/d;
    toll_plan pro rate=6000r/m burst=1000 concurrency=100;
    toll_plan multi rate=10r/s rate=100r/m rate=1000r/h rate=5000r/d;
    toll_plan exact rate=300r/m strict;
    toll_plan enterprise unlimited;
    toll_default_plan free;
    toll_limit_sync 250ms;
    toll_limit_headers ietf;
    toll_limit_log_level notice;""", """
            toll_limit dry_run;
            toll_limit_ip free unauthenticated;
            toll_limit_status 503;"""))
    assert rc == 0, out
    assert "test is successful" in out, out


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_config_errors(nginx_t, case):
    extra, location, alternatives = CONFIG_ERRORS[case]
    rc, out, text = nginx_t(limits_http(extra, location))
    msg = assert_config_refused(rc, out, text, alternatives)
    print(msg)


# --------------------------------------------- 14. TTL on every key

def test_every_limit_key_has_a_ttl(start_nginx, upstream, redis_server):
    ngx = start_nginx(http_extra="""
    toll_plan tb rate=60r/m burst=5;
    toll_plan tw rate=10r/s rate=1000r/d;
    toll_plan tc concurrency=3 rate=100r/h;
    toll_plan tip rate=6r/m burst=5;
    toll_limit_sync 50ms;""", locations=API + """
        location /ip/ {
            toll on;
            toll_limit_ip tip;
            %s
        }
""" % PROXY)
    keys = [raw_key(redis_server, owner="ttl-" + p, plan=p)
            for p in ("tb", "tw", "tc")]
    stop = threading.Event()
    errors = []

    def traffic():
        try:
            while not stop.is_set():
                for k in keys:
                    get(ngx, k)
                get(ngx, keys[0], "/ip/x")
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(repr(e))

    th = threading.Thread(target=traffic, daemon=True)
    th.start()
    rc = redis_server.client
    bad = {}
    seen = set()
    deadline = time.monotonic() + 2.0
    try:
        while time.monotonic() < deadline:
            for name in rc.scan_iter(match="toll:rl:*", count=1000):
                ttl = rc.ttl(name)
                seen.add(name)
                if ttl == -1:
                    bad[name] = ttl
            time.sleep(0.02)
    finally:
        stop.set()
        th.join(10)
    assert not errors, errors
    want = {rl_name(k.key_id) for k in keys} | {rl_name("ip:7f000001")}
    wait_for(lambda: want <= set(rc.scan_iter(match="toll:rl:*")), 5,
             what="limit hashes of %r" % sorted(want))
    for name in rc.scan_iter(match="toll:rl:*"):
        seen.add(name)
        ttl = rc.ttl(name)
        if ttl != -2 and not ttl > 0:
            bad[name] = ttl
    assert not bad, bad
    print("\nlimit keys seen: %s" % sorted(seen))
    for name in want:
        assert rc.type(name) == "hash", name
        # the longest limit plus a slot and a second, at most
        assert 0 < rc.ttl(name) <= 86400 + 2160 + 2, (name, rc.ttl(name))


# ----------------------------------------------------- 15. Redis down

@pytest.mark.parametrize("outage", ["killed", "frozen"])
def test_redis_down_limits_local_then_pushed(start_nginx, upstream,
                                             redis_server, outage):
    """Redis killed (and restarted empty) or frozen (SIGSTOP): the bucket
    is enforced from the zone alone; once Redis answers again the node
    pushes its counts, and the bucket stays as used as it was."""
    ngx = start_nginx(redis_timeout="300ms", http_extra="""
    toll_plan loc rate=3r/m burst=5;
    toll_limit_sync 100ms;""", locations=API)
    k = raw_key(redis_server, owner="offline", plan="loc")
    rc = redis_server.client
    name = rl_name(k.key_id)
    t0 = time.monotonic()
    assert [get(ngx, k).status for _ in range(2)] == [200, 200]
    wait_for(lambda: rc.exists(name), 5, what="%s in Redis" % name)
    assert rc.ttl(name) > 0
    synced = wait_for(lambda: (lambda h: h if h and rc.hgetall(name) == h
                               else None)(rc.hgetall(name)), 5,
                      what="the hash to settle")

    if outage == "killed":
        redis_server.kill()
    else:
        redis_server.freeze()
    # the key is cached; the bucket is enforced from the zone alone
    res = [get(ngx, k) for _ in range(8)]
    assert statuses(res) == [200] * 3 + [429] * 5, statuses(res)
    check_limited(res[3], policy_name="burst")

    if outage == "killed":
        redis_server.start()        # empty: the counts must come back
        k.write(rc)
        wait_for(lambda: rc.exists(name), 5, interval=0.05,
                 what="%s pushed again after the restart" % name)
    else:
        redis_server.thaw()
        wait_for(lambda: rc.hgetall(name) != synced, 5, interval=0.05,
                 what="the outage's counts pushed to %s" % name)
    assert rc.ttl(name) > 0
    # what Redis now holds does not reopen the bucket (one token takes
    # 20 s; this all happens well within that): requests paced over
    # several sync rounds, each of which reads the state back, all refused
    nxt = time.time()
    for _ in range(6):
        sleep_until_wall(nxt)
        nxt += 0.1
        r = get(ngx, k)
        assert r.status == 429, (r, r.header("RateLimit"), rc.hgetall(name))
        check_limited(r, policy_name="burst")
    assert time.monotonic() - t0 < 18, "too slow to tell"
    assert upstream.count == 5
