"""Rate limits at their edges: a worker killed with requests in flight,
HTTP/2 streams, internal redirects, strict plans while Redis is down or
frozen, and the per-address limit in front of authentication.

The contract is /tmp/limits_spec.md (docs/limits.md).  Rates are slow
(a token every 20 s, or a window of a minute) wherever a test counts, so
that nothing refills during it; every wait is a poll with a deadline.
"""

import re
import socket
import subprocess
import time

import pytest

from helpers import client
from helpers.keys import gen_key_id, gen_secret, raw_key, redis_name
from helpers.limits import (LIMIT_LOG_HTTP, Monitor, SlowUpstream,
                            check_limited, hold, policy, rate_headers,
                            read_one, send_only, state, statuses,
                            wait_limit_log)
from helpers.problem import check_problem
from helpers.procs import PROXY, free_port, wait_for
from helpers.workers import kill_only_worker, slow_locations, wait_first_pass


WARM = """
        location /warm/ {
            toll on;
            toll_limit off;
            %s
        }
""" % PROXY

API = """
        location /api/ {
            toll on;
            %s
        }
""" % PROXY + WARM


def get(ngx, key=None, path="/api/x", headers=(), timeout=10.0):
    h = list(headers)
    if key is not None:
        h.append(key.bearer())
    return client.request(ngx.port, path=path, headers=h, timeout=timeout)


def warm(ngx, key):
    """Caches the key through a gated location without limits."""
    r = get(ngx, key, "/warm/x")
    assert r.status == 200, (r, r.body)
    assert not rate_headers(r), r.headers


def rl_name(subject):
    return "toll:rl:{%s}" % subject








def ok_or_none(resp):
    return resp if resp.status == 200 else None


# ------------------------------------- 1. a worker killed in flight

@pytest.mark.allow_log(r"exited on signal 9")
def test_killed_worker_does_not_leak_places(start_nginx, upstream,
                                            redis_server):
    """concurrency=1, one request held at the upstream, its worker
    SIGKILLed: the respawned worker must not count the dead one's place
    (a leak would answer 429 concurrency_limited for ever), and the cap
    must still hold afterwards."""
    slow = SlowUpstream()
    try:
        ngx = start_nginx(workers=1,
                          http_extra="    toll_plan c1 concurrency=1;",
                          locations=slow_locations(slow) + WARM)
        k = raw_key(redis_server, owner="crash", plan="c1")
        hdr = [k.bearer()]
        r = get(ngx, k, "/slow/fast")
        assert r.status == 200, (r, r.body)
        assert policy(r) == {"concurrency": {"q": 1}}, r.headers
        assert state(r) == {"concurrency": {"r": 0}}, r.headers

        held = hold(ngx, slow, "/slow/hold/a", hdr)
        assert slow.held() == 1
        # the cap is in force: the place is taken
        check_limited(get(ngx, k, "/slow/fast"), code="concurrency_limited",
                      policy_name="concurrency")

        _, new = kill_only_worker(ngx)
        # the held client lost its connection with the worker
        held.settimeout(5)
        try:
            data = held.recv(65536)
        except (ConnectionResetError, socket.timeout):
            data = b""
        finally:
            held.close()
        assert not data.startswith(b"HTTP/1.1 200"), data[:200]

        r = wait_first_pass(lambda: get(ngx, k, "/slow/fast"),
                            what="a request of the key to pass after the "
                                 "kill (the dead worker's place leaked?)",
                            since="the respawn")
        assert state(r) == {"concurrency": {"r": 0}}, r.headers

        # the cap still holds in the new worker: one place, not none
        slow.hold()
        b = hold(ngx, slow, "/slow/hold/b", hdr)
        check_limited(get(ngx, k, "/slow/fast"), code="concurrency_limited",
                      policy_name="concurrency")
        slow.release()
        assert read_one(b).status == 200
        wait_for(lambda: ok_or_none(get(ngx, k, "/slow/fast")), 3,
                 interval=0.05, what="the place given back again")
        assert ngx.worker_pids() == new
    finally:
        slow.close()


# ----------------------------------- 2. HTTP/2 streams of one key

NGHTTP = "/usr/bin/nghttp"
# id  responseEnd requestStart  process code size request path
STAT_LINE = re.compile(r"^\s*\d+\s+\S+\s+\S+\s+\S+\s+(\d{3})\s+\S+\s+/")


def nghttp(port, path, n, headers=()):
    """path n times over one HTTP/2 connection (prior knowledge); the
    statuses of the streams that completed."""
    argv = [NGHTTP, "-n", "-s", "-m", str(n)]
    for name, value in headers:
        argv += ["-H", "%s: %s" % (name.lower(), value)]
    argv.append("http://127.0.0.1:%d%s" % (port, path))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return [int(m.group(1)) for m in map(STAT_LINE.match,
                                         out.stdout.splitlines()) if m]


def test_h2_streams_are_separate_requests(start_nginx, upstream,
                                          redis_server):
    """20 streams of one key on one HTTP/2 connection, bucket of 5 (a
    token a second): 5 pass and 15 are refused, each stream counted as a
    request of its own."""
    h2_port = free_port()
    ngx = start_nginx(server_extra="        listen 127.0.0.1:%d http2;"
                      % h2_port,
                      http_extra="    toll_plan h2b rate=60r/m burst=5;",
                      locations=API)
    k = raw_key(redis_server, owner="h2-many", plan="h2b")
    warm(ngx, k)
    upstream.reset()
    t0 = time.monotonic()
    got = nghttp(h2_port, "/api/x", 20, [k.bearer()])
    elapsed = time.monotonic() - t0
    print("\n20 h2 streams in %.0f ms: %d x 200, %d x 429"
          % (elapsed * 1000, got.count(200), got.count(429)))
    assert len(got) == 20, got
    assert sorted(set(got)) <= [200, 429], got
    assert got.count(200) == 5 and got.count(429) == 15, (got, elapsed)
    assert upstream.count == 5


# ----------------------------------------- 3. internal redirects

REDIRECT_LOCATIONS = """
        location /ep/ {
            toll on;
            root html;
            error_page 404 = /fallback/ep;
        }
        location /tf/ {
            toll on;
            try_files $uri /fallback/tf;
        }
        location /fallback/ {
            toll on;
            %s
        }
""" % PROXY + WARM


@pytest.mark.parametrize("kind", ["ep", "tf"])
def test_internal_redirect_counts_once(start_nginx, upstream, redis_server,
                                       kind):
    """A request redirected from one gated location to another (error_page
    404 = URI, or try_files ... URI) takes one token, not two: with a
    bucket of 3, three pass and the fourth is refused, and the upstream
    saw each admitted request once."""
    ngx = start_nginx(http_extra="    toll_plan r3 rate=3r/m burst=3;\n"
                      + LIMIT_LOG_HTTP, locations=REDIRECT_LOCATIONS)
    k = raw_key(redis_server, owner="redir-" + kind, plan="r3")
    warm(ngx, k)
    upstream.reset()
    res = []
    tags = []
    for _ in range(4):
        r, t = client.tagged_request(ngx.port, [k.bearer()],
                                     "/%s/missing" % kind)
        res.append(r)
        tags.append(t)
    assert statuses(res) == [200, 200, 200, 429], [
        (r.status, r.header("RateLimit")) for r in res]
    # each admitted request took exactly one token
    assert [state(r)["burst"]["r"] for r in res[:3]] == [2, 1, 0], [
        r.header("RateLimit") for r in res]
    check_limited(res[3], policy_name="burst")
    assert upstream.count == 3, [q["path"] for q in upstream.requests]
    seen = [v for q in upstream.requests for n, v in q["headers"]
            if n.lower() == "x-test-tag"]
    assert sorted(seen) == sorted(tags[:3]), (seen, tags)
    for q in upstream.requests:
        assert q["path"] == "/fallback/" + kind, q["path"]
    # one decision per request in the access log: PASSED x3, REJECTED
    lines = [wait_limit_log(ngx, t) for t in tags]
    assert [l["ls"] for l in lines] == ["PASSED"] * 3 + ["REJECTED"], lines
    # and the bucket is the key's, wherever the request lands
    check_limited(get(ngx, k, "/fallback/x"), policy_name="burst")
    assert upstream.count == 3


# ------------------------------------- 4. strict plan, Redis killed

STRICT_HTTP = """
    toll_plan s10 rate=10r/m strict;
    toll_limit_sync 100ms;
"""


def window_count(rc, name, prefix="m:"):
    return sum(int(v) for f, v in rc.hgetall(name).items()
               if f.startswith(prefix))


def test_strict_redis_down_decides_locally(start_nginx, upstream,
                                           redis_server):
    """A strict window of 10 a minute with Redis killed: enforced locally,
    10 pass and 2 get 429 (not 503).  After Redis restarts the node's
    counts are pushed, and decisions are strict again: another node's
    admissions in Redis refuse this node's very first request of a key."""
    ngx = start_nginx(workers=1, redis_timeout="300ms",
                      http_extra=STRICT_HTTP, locations=API)
    rc = redis_server.client
    k = raw_key(redis_server, owner="strict-down", plan="s10")
    warm(ngx, k)
    upstream.reset()

    redis_server.kill()
    res = [get(ngx, k) for _ in range(12)]
    assert statuses(res) == [200] * 10 + [429] * 2, statuses(res)
    for r in res[10:]:
        check_limited(r, policy_name="minute")
    assert upstream.count == 10
    warns = [l for l in ngx.error_log_text().splitlines()
             if "[warn]" in l and "local" in l]
    print("\nwhile Redis was down: %d warn lines about deciding locally%s"
          % (len(warns), (", e.g.\n  " + warns[0]) if warns else ""))

    redis_server.start()                # empty
    k.write(rc)
    name = rl_name(k.key_id)
    r = get(ngx, k)
    assert r.status == 429, (r, r.body)     # the window is full; not 503
    check_limited(r, policy_name="minute")
    wait_for(lambda: rc.exists(name), 5, interval=0.05,
             what="%s in Redis after the restart" % name)
    assert rc.ttl(name) > 0, rc.ttl(name)
    # the outage's ten admissions reach Redis, no more, no fewer
    wait_for(lambda: window_count(rc, name) == 10, 5, interval=0.05,
             what="the 10 local admissions pushed (have %r)"
             % rc.hgetall(name))

    # strict again: a second node fills a fresh key's window in Redis;
    # this node has never seen the key, so only Redis can refuse it
    other = start_nginx(workers=1, redis_timeout="300ms",
                        http_extra=STRICT_HTTP, locations=API)
    k2 = raw_key(redis_server, owner="strict-back", plan="s10")
    res2 = [get(other, k2) for _ in range(11)]
    assert statuses(res2) == [200] * 10 + [429], statuses(res2)
    assert window_count(rc, rl_name(k2.key_id)) == 10, \
        rc.hgetall(rl_name(k2.key_id))
    before = upstream.count
    r = get(ngx, k2)
    assert r.status == 429, ("a strict plan decided locally after Redis "
                             "came back", r, r.headers)
    check_limited(r, policy_name="minute")
    assert upstream.count == before


# ------------------- 5. a client that leaves a strict request parked

def test_client_leaves_while_strict_waits(start_nginx, upstream,
                                          redis_server):
    """Redis frozen while a strict request waits for its verdict; the
    client gives up and leaves, then Redis answers (late, onto a cancelled
    call).  Nothing crashes, no place of the concurrency cap leaks, and
    the key's next request passes."""
    ngx = start_nginx(workers=1, redis_timeout="3s",
                      http_extra="    toll_plan sc rate=100r/m "
                      "concurrency=1 strict;\n" + LIMIT_LOG_HTTP,
                      locations=API)
    workers = ngx.worker_pids()
    k = raw_key(redis_server, owner="strict-leave", plan="sc")
    warm(ngx, k)
    r = get(ngx, k)
    assert r.status == 200, (r, r.body)
    assert policy(r) == {"minute": {"q": 100, "w": 60},
                         "concurrency": {"q": 1}}, r.headers
    upstream.reset()

    tag = client.tag()
    redis_server.freeze()
    try:
        s = send_only(ngx.port, "/api/x", [k.bearer(), ("X-Test-Tag", tag)])
        # the client's own short timeout: no verdict while Redis is frozen
        s.settimeout(0.3)
        try:
            data = s.recv(65536)
        except socket.timeout:
            data = None
        assert data is None, ("answered while Redis was frozen", data)
        s.close()
        # nginx sees the client leave while the request is parked
        line = wait_limit_log(ngx, tag, timeout=2)
        assert line["status"] == "499", line
    finally:
        redis_server.thaw()

    t0 = time.monotonic()
    r = wait_for(lambda: ok_or_none(get(ngx, k)), 5, interval=0.05,
                 what="the key's next request to pass after the thaw")
    print("\nfirst 200 after the thaw: %.0f ms"
          % ((time.monotonic() - t0) * 1000))
    # the abandoned request holds no place: this one is alone in flight
    assert state(r)["concurrency"]["r"] == 0, r.headers
    assert [get(ngx, k).status for _ in range(3)] == [200] * 3
    # the caller who left cost no upstream call
    seen = [v for q in upstream.requests for n, v in q["headers"]
            if n.lower() == "x-test-tag"]
    assert tag not in seen, seen
    assert upstream.count == 4
    assert ngx.worker_pids() == workers
    log = ngx.error_log_text()
    assert not re.search(r"\[(alert|crit|emerg)\]", log), log[-3000:]


# ---------------------------- 6. per address, before authentication

def test_limit_ip_counts_requests_without_credentials(start_nginx, upstream,
                                                      redis_server):
    """toll_limit_ip PLAN without "unauthenticated": every request counts
    against its address before authentication, so once the address is
    over its bucket, requests without credentials get 429 "ip-burst"
    rather than 401, unknown key ids are not looked up, and a valid key is
    refused too."""
    ngx = start_nginx(http_extra="    toll_plan ipb rate=3r/m burst=5;",
                      locations="""
        location /api/ {
            toll on;
            toll_limit_ip ipb;
            %s
        }
""" % PROXY)
    good = raw_key(redis_server, owner="ip-good")     # no plan
    assert get(ngx, good).status == 200
    for _ in range(2):
        check_problem(get(ngx), 401, "unauthorized")
    mon = Monitor(redis_server)
    try:
        bad_ids = [gen_key_id() for _ in range(4)]

        def bad(kid):
            return get(ngx, headers=[("X-API-Key", kid + ":" + gen_secret())])

        for kid in bad_ids[:2]:
            check_problem(bad(kid), 401, "unauthorized")
        # five requests counted: the address is over its bucket
        for _ in range(3):
            r = get(ngx)
            check_limited(r, policy_name="ip-burst")
            assert "ip-burst" in policy(r), r.headers
            assert "ip-burst" in r.header("RateLimit-Policy"), r.headers
            assert state(r)["ip-burst"]["r"] == 0, r.headers
        for kid in bad_ids[2:]:
            check_limited(bad(kid), policy_name="ip-burst")
        r = get(ngx, good)
        check_limited(r, policy_name="ip-burst")
        mon.sync()
        seen = mon.text()
        for kid in bad_ids[:2]:
            assert redis_name(kid) in seen, kid
        for kid in bad_ids[2:]:
            assert kid not in seen, (kid, [l for l in seen.splitlines()
                                           if kid in l])
    finally:
        mon.close()
    assert upstream.count == 1
    log = ngx.error_log_text()
    assert re.search(r'toll: limited, policy "ip-burst" of plan "ipb", '
                     r'address "127\.0\.0\.1"', log), log[-2000:]
