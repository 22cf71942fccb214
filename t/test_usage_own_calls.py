"""A buyer reads its own calls at once (docs/directives.md#toll_usage).

The meter counted a call in the log phase, which nginx runs after the
answer's last byte has gone: a client that read the whole answer and
asked /usage/me on a new connection could be answered before the call
was counted.  On a busy machine the gap is a preempted worker (CI saw
calls 1 where 2 were made, t/conformance/test_agent_commerce.py); with a
`mirror` it is as long as the mirrored request, which these tests make
1.5 s.  The meter now counts a call when its answer's end passes the
gate, before it is sent; the log phase does not count it again.
"""

import json
import os
import platform
import signal
import subprocess
import threading
import time

import pytest

from helpers import client
from helpers.balance import credit, invariant
from helpers.keys import make_key
from helpers.meter import (meter_http, meter_log, meter_upstream, micros,
                           proxy_to, upstream_block, usage, wait_usage)
from helpers.procs import pid_alive, wait_for
from helpers.settle import Settle, ledger_check, ledger_usage

assert meter_upstream  # a fixture, used by name

MIRROR_MS = 1500

LOCATIONS = """
        location /svc/ {
            toll on;
            toll_service svc provider=acme price=0.05;
            mirror /shadow;
            %(proxy)s
        }

        location = /shadow {
            internal;
            rewrite ^ /shadow/x?delay_ms=%(ms)d? break;
            proxy_pass http://meterapi;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        location = /usage/me {
            toll on;
            toll_usage;
        }
""" % {"proxy": proxy_to("meterapi"), "ms": MIRROR_MS}


@pytest.fixture
def gate(start_nginx, meter_upstream):
    return start_nginx(http_extra=meter_http() + upstream_block(
        "meterapi", meter_upstream.port), locations=LOCATIONS)


def svc_logged(ngx):
    """the calls to /svc/ whose request is over (the access log's lines)"""
    return [rec for rec in meter_log(ngx) if rec["uri"].startswith("/svc/")]


def usage_me(ngx, key):
    r = client.request(ngx.port, path="/usage/me", headers=[key.bearer()])
    assert r.status == 200, (r, r.body)
    return json.loads(r.body)


@pytest.mark.parametrize("query,method,length", [
    ("", "GET", 11),                     # under postpone_output
    ("?size=200000", "GET", 200000),     # sent before the last buffer
    ("?size=20000&chunked=1", "GET", 20000),
    ("", "HEAD", 0),                     # no body at all
])
def test_usage_counts_answered_calls(gate, meter_upstream, redis_server,
                                     query, method, length):
    key = make_key(redis_server, owner="alice")
    for _ in range(2):
        r = client.request(gate.port, method, "/svc/x" + query,
                           [key.bearer()])
        assert r.status == 200, r
        assert len(r.body) == (0 if method == "HEAD" else length)

    # the mirrors are still waiting: no call's request is over (logged)
    assert not svc_logged(gate)
    doc = usage_me(gate, key)
    assert doc["totals"]["calls"] == 2, doc
    assert doc["totals"]["amount"] == "0.1", doc

    # counted once: the log phase that follows adds nothing
    wait_for(lambda: len(svc_logged(gate)) == 2, 2 * MIRROR_MS / 1000 + 5,
             what="both calls logged")
    wait_usage(redis_server.client, {("alice", "svc"): {
        "calls": 2, "paid_calls": 2, "amount_micros": 100000}},
        fields=("calls", "paid_calls", "amount_micros"))
    assert usage_me(gate, key)["totals"]["calls"] == 2
    assert meter_upstream.counts()[("alice", "svc")] == 2


def test_usage_upstream_error_not_charged_early(gate, meter_upstream,
                                                redis_server):
    """Counted early, a call is still what it turned out to be: an
    upstream 503 is an error, not charged."""
    key = make_key(redis_server, owner="bob")
    r = client.request(gate.port, "GET", "/svc/x?status=503",
                       [key.bearer()])
    assert r.status == 503, r
    assert not svc_logged(gate)
    doc = usage_me(gate, key)
    assert doc["totals"]["calls"] == 1, doc
    assert doc["totals"]["errors"] == 1, doc
    assert doc["totals"]["amount"] == "0", doc
    wait_for(lambda: len(svc_logged(gate)) == 1, MIRROR_MS / 1000 + 5,
             what="the call logged")
    wait_usage(redis_server.client, {("bob", "svc"): {
        "calls": 1, "errors": 1, "amount_micros": 0}},
        fields=("calls", "errors", "amount_micros"))
    assert usage(redis_server.client)[("bob", "svc")]["calls"] == 1


# ------------------------------------------------------ a held worker

GDB = "/usr/bin/gdb"
# ngx_http_send_special(r, flags)'s second argument; NGX_HTTP_LAST is 1
FLAGS = {"x86_64": "$rsi", "aarch64": "$x1"}
# what gdb says when the kernel refuses it the worker (Yama, a container
# without CAP_SYS_PTRACE); it then waits for commands, not for the worker
REFUSED = ("ptrace:", "Operation not permitted", "Could not attach",
           "The program is not being run")


class Held:
    """gdb on each worker, stopping the one that reaches nginx's last
    buffer, ngx_http_send_special(r, NGX_HTTP_LAST): an answer's bytes are
    written by then (all of them when its length is known), its last
    buffer has not passed the filters, its request is not over.  That is
    where a busy machine can preempt a worker for milliseconds."""

    def __init__(self, pids):
        flags = FLAGS.get(platform.machine())
        if not os.access(GDB, os.X_OK) or flags is None:
            pytest.skip("needs gdb on x86_64 or aarch64")
        self.gdbs = []
        for pid in pids:
            g = subprocess.Popen(
                [GDB, "-q", "-nx", "-p", str(pid),
                 "-ex", "set confirm off", "-ex", "set pagination off",
                 "-ex", "break ngx_http_send_special if %s == 1" % flags,
                 "-ex", "continue"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, bufsize=1)
            g.lines = []
            g.worker = pid
            threading.Thread(target=self._read, args=(g,),
                             daemon=True).start()
            self.gdbs.append(g)
        for g in self.gdbs:
            if not self._wait(g, "Continuing.", REFUSED, 30):
                out = "".join(g.lines)
                self.release()
                if any(m in out for m in REFUSED):
                    pytest.skip("gdb may not attach here: %s" % out[-300:])
                raise AssertionError("gdb did not attach: %s" % out)

    @staticmethod
    def _read(g):
        for line in g.stdout:
            g.lines.append(line)

    @staticmethod
    def _wait(g, mark, failed, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = "".join(g.lines)
            if mark in text:
                return True
            if g.poll() is not None or any(m in text for m in failed):
                return False
            time.sleep(0.01)
        return False

    def stopped(self, timeout=10):
        """the gdb whose worker reached the breakpoint"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for g in self.gdbs:
                if any("Breakpoint 1," in line for line in list(g.lines)):
                    return g
            time.sleep(0.01)
        return None

    def release(self):
        """every worker detached, its breakpoint removed, running on"""
        for g in self.gdbs:
            if g.poll() is not None:
                continue
            if not any("Breakpoint 1," in line for line in list(g.lines)):
                g.send_signal(signal.SIGINT)
            try:
                g.stdin.write("detach\nquit\n")
                g.stdin.flush()
                g.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                g.kill()
                g.wait()


HELD = """
        location /svc/ {
            toll on;
            toll_service svc provider=acme price=0.05;
            %s
        }

        location /paid/ {
            toll on;
            toll_prepaid on;
            toll_service paid provider=acme price=0.05;
            %s
        }

        location = /usage/me {
            toll on;
            toll_usage;
        }
""" % (proxy_to("meterapi"), proxy_to("meterapi"))


@pytest.mark.parametrize("query", ["?size=20000", "?size=20000&chunked=1"])
def test_usage_counts_call_of_held_worker(start_nginx, meter_upstream,
                                          redis_server, query):
    """The worker that served the call stops after writing the answer
    (20,000 bytes: nginx sends them before its last buffer); the other
    worker answers /usage/me with the call in it.  With a known length,
    the answer's last byte counted it; chunked, the terminating chunk is
    not written before the last buffer, which counts the call."""
    ngx = start_nginx(http_extra=meter_http() + upstream_block(
        "meterapi", meter_upstream.port), locations=HELD, workers=2)
    key = make_key(redis_server, owner="alice")
    held = Held(ngx.worker_pids())
    try:
        got = []
        call = threading.Thread(target=lambda: got.append(client.request(
            ngx.port, "GET", "/svc/x" + query, [key.bearer()], timeout=30)))
        call.start()
        assert held.stopped() is not None, [g.lines for g in held.gdbs]
        call.join(timeout=0.5)
        if query.endswith("chunked=1"):
            # the terminating chunk waits for the last buffer
            assert not got
        else:
            assert got and got[0].status == 200 and len(got[0].body) == 20000
            doc = usage_me(ngx, key)
            assert doc["totals"]["calls"] == 1, doc
            assert doc["totals"]["amount"] == "0.05", doc
    finally:
        held.release()
    call.join(timeout=10)
    assert got and got[0].status == 200, got
    wait_for(lambda: usage(redis_server.client).get(("alice", "svc"), {})
             .get("calls") == 1, 10, what="the call in Redis, once")
    assert usage_me(ngx, key)["totals"]["calls"] == 1


# nginx's master logs both for a worker killed with SIGKILL (the second
# when the worker held the zone's lock: the master releases it)
@pytest.mark.allow_log(r"exited on signal 9",
                       r"shared memory zone .* was locked by")
def test_worker_killed_between_the_count_and_its_log_phase(
        start_nginx, meter_upstream, redis_server, tmp_path):
    """The fault where the count now is: the worker that served a prepaid
    call is SIGKILLed after the answer's end counted it and before its
    log phase.  The call is counted once (the dead worker's open records
    are swept, and this one is no longer among them), paid once from the
    balance, posted once: upstream = meter = ledger, debits = credits, no
    balance overdrawn."""
    ngx = start_nginx(http_extra=meter_http() + upstream_block(
        "meterapi", meter_upstream.port), locations=HELD, workers=2)
    rc = redis_server.client
    key = make_key(redis_server, owner="carol")
    credit(rc, "carol", micros("1.00"))
    old = ngx.worker_pids()
    held = Held(old)
    try:
        got = []
        call = threading.Thread(target=lambda: got.append(client.request(
            ngx.port, "GET", "/paid/x?size=20000", [key.bearer()],
            timeout=30)))
        call.start()
        g = held.stopped()
        assert g is not None, [g.lines for g in held.gdbs]
        call.join(timeout=5)
        assert got and got[0].status == 200 and len(got[0].body) == 20000
        assert usage_me(ngx, key)["totals"]["calls"] == 1
        os.kill(g.worker, signal.SIGKILL)
        wait_for(lambda: not pid_alive(g.worker), 10, what="the kill")
    finally:
        held.release()
    wait_for(lambda: len(ngx.worker_pids()) == 2 and ngx.worker_pids() - old,
             15, what="the master to replace the killed worker")
    ngx.known_workers |= ngx.worker_pids()

    for _ in range(3):
        r = client.request(ngx.port, "GET", "/paid/x", [key.bearer()])
        assert r.status == 200, r
    assert usage_me(ngx, key)["totals"]["calls"] == 4
    ngx.stop()                 # the rest flushed, the leases back

    served = meter_upstream.counts()[("carol", "paid")]
    assert served == 4
    assert usage(rc)[("carol", "paid")]["calls"] == served
    s = Settle(redis_server, tmp_path / "ledger.db")
    try:
        p = s.once()
        assert p.returncode == 0, p.stderr
    finally:
        s.close()
    posted = {svc: rec for (b, _d, svc), rec in
              ledger_usage(s.ledger).items() if b == "carol"}
    assert posted["paid"]["calls"] == served, posted
    assert posted["paid"]["amount_micros"] == served * micros("0.05")
    ledger_check(s.ledger)
    b = invariant(rc, "carol")
    assert b["spent"] == served * micros("0.05") and b["held"] == 0, b
    assert b["available"] == micros("1.00") - b["spent"], b
