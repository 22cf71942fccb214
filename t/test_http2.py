"""HTTP/2: each stream is a request of its own, parked and resumed alone.

Many streams on one connection with one uncached key are all parked on
Redis lookups in one worker and must each be resumed through their own
stream; a connection that goes away while its streams are parked must
leave the late Redis replies with nothing to touch (the cancel path of
the pool cleanup; a use-after-free here shows under make test-asan).

The client is nghttp (Debian's nghttp2-client), which multiplexes
requests over one connection with prior knowledge.
"""

import re
import subprocess
import time

from helpers.keys import gen_key_id, gen_secret, raw_key
from helpers.procs import free_port, wait_for


NGHTTP = "/usr/bin/nghttp"
STREAMS = 40

# id  responseEnd requestStart  process code size request path
STAT_LINE = re.compile(r"^\s*\d+\s+\S+\s+\S+\s+\S+\s+(\d{3})\s+\S+\s+/")


def start_h2(start_nginx, **kw):
    port = free_port()
    ngx = start_nginx(server_extra="        listen 127.0.0.1:%d http2;" % port,
                      **kw)
    ngx.h2_port = port
    return ngx


def nghttp(port, path, n, headers=(), timeout_ms=None):
    """Requests path n times over one HTTP/2 connection; returns the
    statuses of the streams that completed."""
    argv = [NGHTTP, "-n", "-s", "-m", str(n)]
    for name, value in headers:
        argv += ["-H", "%s: %s" % (name.lower(), value)]
    if timeout_ms is not None:
        argv += ["-t", "%dms" % timeout_ms]     # nghttp refuses "-t 0.1"
    argv.append("http://127.0.0.1:%d%s" % (port, path))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return [int(m.group(1)) for m in map(STAT_LINE.match,
                                         out.stdout.splitlines()) if m]


def test_streams_on_one_connection_each_gated(start_nginx, upstream,
                                              redis_server):
    ngx = start_h2(start_nginx)
    k = raw_key(redis_server, owner="h2-buyer", plan="pro")

    for _ in range(2):
        upstream.reset()
        statuses = nghttp(ngx.h2_port, "/h2", STREAMS, [k.bearer()])
        assert statuses == [200] * STREAMS
        assert upstream.wait_count(STREAMS)
        for req in upstream.requests:
            buyers = [v for n, v in req["headers"]
                      if n.lower() == "x-toll-buyer"]
            assert buyers == ["h2-buyer"], req["headers"]

    upstream.reset()
    bad = [("Authorization", "Bearer %s:%s" % (k.key_id, gen_secret()))]
    assert nghttp(ngx.h2_port, "/h2", STREAMS, bad) == [401] * STREAMS
    assert upstream.count == 0


def test_streams_fail_closed_while_redis_frozen(start_nginx, upstream,
                                                redis_server):
    ngx = start_h2(start_nginx, redis_timeout="300ms")

    redis_server.freeze()
    unknown = [("X-API-Key", gen_key_id() + ":" + gen_secret())]
    t0 = time.monotonic()
    statuses = nghttp(ngx.h2_port, "/h2", 20, unknown)
    elapsed = time.monotonic() - t0
    redis_server.thaw()

    assert statuses == [503] * 20
    # one timeout for all of them: they wait on one connection, together
    assert elapsed < 2.0, elapsed
    assert upstream.count == 0


def test_connection_gone_while_streams_parked(start_nginx, upstream,
                                              redis_server):
    # Redis answers late but within the module's timeout: the client
    # leaves first, its parked requests end at once (499) and cancel their
    # lookups, and the late replies land on cancelled commands.  One
    # worker, so that a later request proves those replies were read.
    ngx = start_h2(start_nginx, redis_timeout="6s", toll_log=True,
                   workers=1)
    workers = ngx.worker_pids()
    keys = [raw_key(redis_server, owner="late%d" % i) for i in range(3)]

    pause_s = 3.0
    redis_server.client.execute_command("CLIENT", "PAUSE",
                                        str(int(pause_s * 1000)))
    t0 = time.monotonic()
    for k in keys:
        statuses = nghttp(ngx.h2_port, "/h2", 10, [k.bearer()],
                          timeout_ms=100)
        assert statuses == []

    # ended while Redis still holds the replies, not when they come: a
    # request left parked until then would run on towards the upstream
    wait_for(lambda: sum(1 for line in ngx.toll_log_lines()
                         if line.get("status") == "499") == 30,
             timeout=max(0.1, t0 + pause_s - 1.0 - time.monotonic()),
             what="30 streams ended 499 during the pause")

    # PING waits out the pause; the late HMGET replies go out with it
    assert redis_server.client.ping()

    after = raw_key(redis_server, owner="after")
    assert nghttp(ngx.h2_port, "/h2", 5, [after.bearer()]) == [200] * 5

    # a caller who left costs no upstream call
    buyers = {v for req in upstream.requests for n, v in req["headers"]
              if n.lower() == "x-toll-buyer"}
    assert buyers == {"after"}, buyers

    for k in keys:
        assert nghttp(ngx.h2_port, "/h2", 5, [k.bearer()]) == [200] * 5

    assert ngx.worker_pids() == workers
