"""Concurrency places and the zone's table of worker processes: a place
held by a worker that dies is given back whichever slot of the table the
worker had, and every worker counts its requests in flight, however many
workers there are (docs/limits.md, "Workers, reloads and crashes").

Every wait is a poll with a deadline.
"""

import os
import select
import signal
import time

import pytest

from helpers import client
from helpers.keys import raw_key
from helpers.limits import (SlowUpstream, check_limited, connect, hold,
                            policy, state)
from helpers.procs import free_port, pid_alive, wait_for
from helpers.workers import kill_only_worker, slow_locations, wait_first_pass


def get(ngx, key, path):
    return client.request(ngx.port, path=path, headers=[key.bearer()])


def socket_readable(sock):
    return bool(select.select([sock], [], [], 0)[0])


def ok_or_none(resp):
    return resp if resp.status == 200 else None


@pytest.mark.allow_log(r"exited on signal 9")
def test_worker_killed_after_reload_gives_places_back(start_nginx, upstream,
                                                      redis_server):
    """One worker; a reload moves it to the table's second slot (the old
    worker still holds the first while it exits).  That worker is killed
    with a request in flight: the respawned worker takes the first slot,
    free again, and the second slot's place must still be given back (a
    leak answers 429 concurrency_limited for ever)."""
    slow = SlowUpstream()
    try:
        ngx = start_nginx(workers=1,
                          http_extra="    toll_plan c1 concurrency=1;",
                          locations=slow_locations(slow))
        k = raw_key(redis_server, owner="reload-crash", plan="c1")
        r = get(ngx, k, "/slow/fast")
        assert r.status == 200, (r, r.body)
        assert policy(r) == {"concurrency": {"q": 1}}, r.headers

        ngx.reload(wait_old_exit=True)

        held = hold(ngx, slow, "/slow/hold/a", [k.bearer()])
        check_limited(get(ngx, k, "/slow/fast"), code="concurrency_limited",
                      policy_name="concurrency")

        kill_only_worker(ngx)
        held.close()

        r = wait_first_pass(lambda: get(ngx, k, "/slow/fast"),
                            what="a request of the key to pass after the "
                                 "kill (the dead worker's place leaked)",
                            since="the respawn")
        assert state(r) == {"concurrency": {"r": 0}}, r.headers

        # one place, not none and not two
        b = hold(ngx, slow, "/slow/hold/b", [k.bearer()])
        check_limited(get(ngx, k, "/slow/fast"), code="concurrency_limited",
                      policy_name="concurrency")
        slow.release()
        r, _ = client.read_response(b)
        b.close()
        assert r.status == 200, r
    finally:
        slow.close()


@pytest.mark.allow_log(r"exited on signal 9")
def test_old_worker_killed_after_reload_gives_places_back(start_nginx,
                                                          upstream,
                                                          redis_server):
    """A request held by the one worker; a reload, and the old worker,
    still finishing it, is killed.  Nothing is respawned and no worker
    starts after it: the new worker must find the dead process's slot by
    itself and give its place back."""
    slow = SlowUpstream()
    try:
        ngx = start_nginx(workers=1,
                          http_extra="    toll_plan c1 concurrency=1;",
                          locations=slow_locations(slow))
        k = raw_key(redis_server, owner="old-crash", plan="c1")
        (old,) = ngx.worker_pids()
        held = hold(ngx, slow, "/slow/hold/a", [k.bearer()])

        ngx.reload()
        assert pid_alive(old)
        check_limited(get(ngx, k, "/slow/fast"), code="concurrency_limited",
                      policy_name="concurrency")

        os.kill(old, signal.SIGKILL)
        wait_for(lambda: not pid_alive(old), 5, what="the old worker gone")
        held.close()

        r = wait_first_pass(lambda: get(ngx, k, "/slow/fast"),
                            what="a request of the key to pass after the "
                                 "old worker was killed (its place leaked)",
                            since="the kill")
        assert state(r) == {"concurrency": {"r": 0}}, r.headers
    finally:
        slow.close()


WORKERS = 33    # more than the table's old fixed 32 slots


class KeepAlive:
    """A keep-alive connection, and the worker (pid) that serves it."""

    def __init__(self, port):
        self.sock = connect(port)
        self.buf = b""
        self.pid = None

    def send(self, path, headers):
        self.sock.sendall(client.build_request("GET", path, headers,
                                               close=False))

    def read(self):
        r, self.buf = client.read_response(self.sock, buf=self.buf)
        return r

    def request(self, path, headers):
        self.send(path, headers)
        r = self.read()
        self.pid = int(r.header("x-worker"))
        return r

    def close(self):
        self.sock.close()


def test_every_worker_counts_in_flight(start_nginx, upstream, redis_server):
    """33 workers, concurrency=1: for each worker, a request held there
    must make another worker refuse the key.  A worker that got no slot
    in the table does not count what it has in flight, and the other
    worker admits a second request."""
    slow = SlowUpstream()
    conns = []
    try:
        port2 = free_port()
        # reuseport: the kernel spreads connections over all workers
        ngx = start_nginx(workers=WORKERS,
                          http_extra="""
    toll_plan c1 concurrency=1;
    server {
        listen 127.0.0.1:%d reuseport;
        keepalive_requests 10000;
        add_header X-Worker $pid always;
%s
    }
""" % (port2, slow_locations(slow)))
        k = raw_key(redis_server, owner="many-workers", plan="c1")
        hdr = [k.bearer()]
        # a key without a plan finds the workers: no place to wait for
        free = [raw_key(redis_server, owner="no-plan").bearer()]

        by_pid = {}
        deadline = time.monotonic() + 30
        while len(by_pid) < WORKERS:
            assert time.monotonic() < deadline, \
                "connections reached %d of %d workers" % (len(by_pid),
                                                          WORKERS)
            c = KeepAlive(port2)
            conns.append(c)
            r = c.request("/slow/fast", free)
            assert r.status == 200, (r, r.body)
            by_pid.setdefault(c.pid, c)
        assert set(by_pid) == ngx.worker_pids()

        pids = sorted(by_pid)
        uncounted = []
        for i, pid in enumerate(pids):
            c, other = by_pid[pid], by_pid[pids[(i + 1) % len(pids)]]
            path = "/slow/hold/%d" % pid
            # the previous place is given back a moment after its answer
            end = time.monotonic() + 5
            while True:
                slow.hold()
                c.send(path, hdr)
                while (time.monotonic() < end
                       and not slow.count(lambda p: p == path)):
                    if socket_readable(c.sock):
                        break
                    time.sleep(0.005)
                if slow.count(lambda p: p == path):
                    break
                check_limited(c.read(), code="concurrency_limited",
                              policy_name="concurrency")
                assert time.monotonic() < end, "%s never held" % path
            r = other.request("/slow/fast", hdr)
            if r.status == 200:
                uncounted.append(pid)
            else:
                check_limited(r, code="concurrency_limited",
                              policy_name="concurrency")
            slow.release()
            r = c.read()
            assert r.status == 200, (r, r.body)
        assert not uncounted, ("workers whose requests in flight do not "
                               "count: %s" % uncounted)
    finally:
        for c in conns:
            c.close()
        slow.close()
