"""Reloads under load: no request fails.

Client threads run for the whole test: keep-alive clients with a cached
key, a client opening a new connection per request, and a client whose
every request uses a key never seen before (so it waits on Redis while
workers are being replaced).  Ten `nginx -s reload`s later, every answer
was 200 and the error log is clean.

A keep-alive connection that an exiting worker closes while idle is
normal HTTP (RFC 9112 section 9.3.1: a client retries a request that got
no answer on a reused connection); such a retry is counted and reported,
not failed.  Any other error, and any status but 200, fails the test.
"""

import threading
import time

from helpers import client
from helpers.keys import raw_key


RELOADS = 10


class Load:
    def __init__(self, ngx, fn, keepalive):
        self.ngx = ngx
        self.fn = fn
        self.keepalive = keepalive
        self.ok = 0
        self.retried = 0
        self.failures = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        conn = client.KeepAlive(self.ngx.port) if self.keepalive else None
        while not self.stop.is_set():
            headers = self.fn()
            try:
                if conn is None:
                    r = client.request(self.ngx.port, path="/api/x",
                                       headers=headers)
                else:
                    reused = conn.sock is not None and conn.used > 0
                    try:
                        r = conn.request(path="/api/x", headers=headers)
                    except (client.NoResponse, ConnectionResetError,
                            BrokenPipeError):
                        if not reused:
                            raise
                        # the idle connection was closed under us: retry
                        # once on a new one, as HTTP clients do
                        self.retried += 1
                        conn.connect()
                        r = conn.request(path="/api/x", headers=headers)
            except Exception as e:  # noqa: BLE001 -- every error counts
                self.failures.append("error: %r" % e)
                if conn is not None:
                    conn.close()
                continue
            if r.status != 200:
                self.failures.append("status %d: %r" % (r.status,
                                                       r.body[:200]))
            else:
                self.ok += 1
        if conn is not None:
            conn.close()


def test_reloads_under_load(start_nginx, upstream, redis_server):
    ngx = start_nginx(workers=2)
    cached = raw_key(redis_server, owner="steady", plan="gold")
    assert client.request(ngx.port, path="/api/x",
                          headers=[cached.bearer()]).status == 200
    fresh = [raw_key(redis_server, owner="fresh%d" % i) for i in range(1500)]
    fresh_iter = iter(fresh)
    fresh_lock = threading.Lock()

    def next_fresh():
        with fresh_lock:
            k = next(fresh_iter, None)
        return [k.x_api_key()] if k else [cached.x_api_key()]

    loads = ([Load(ngx, lambda: [cached.bearer()], True) for _ in range(3)]
             + [Load(ngx, lambda: [cached.x_api_key()], False),
                Load(ngx, next_fresh, True)])
    upstream.reset()
    master = ngx.master_pid
    for ld in loads:
        ld.thread.start()

    def progressed(marks, n=3):
        return all(ld.ok + len(ld.failures) >= m + n
                   for ld, m in zip(loads, marks))

    generations = [ngx.worker_pids()]
    try:
        for _ in range(RELOADS):
            marks = [ld.ok + len(ld.failures) for ld in loads]
            generations.append(ngx.reload())
            # traffic flows through the new generation before the next
            deadline = time.monotonic() + 10
            while not progressed(marks) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert progressed(marks), "load stalled after a reload"
    finally:
        for ld in loads:
            ld.stop.set()
        for ld in loads:
            ld.thread.join(15)

    assert ngx.master_pid == master
    for a, b in zip(generations, generations[1:]):
        assert not (a & b), "a reload kept an old worker: %r" % generations
    failures = [f for ld in loads for f in ld.failures]
    total_ok = sum(ld.ok for ld in loads)
    retried = sum(ld.retried for ld in loads)
    print("reloads: %d, requests ok: %d, failed: %d, keep-alive retries: %d"
          % (RELOADS, total_ok, len(failures), retried))
    assert not failures, "%d failed requests, first ones: %r" % (
        len(failures), failures[:10])
    assert total_ok >= 200, total_ok
    assert upstream.wait_count(total_ok, 5) == total_ok, \
        "upstream saw %d requests for %d answers" % (upstream.count,
                                                     total_ok)
