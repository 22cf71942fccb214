"""A Redis fault matrix (issue 13; docs/architecture.md "Failure policy").

Each path that talks to Redis meets the error classes a real Redis sends
(t/helpers/faults.py makes them for real):

    paths   lookup   an uncached key's record (HMGET)
            limits   the limit sync script (a day window: Redis's slot
                     counts are exact, so a count lost or sent twice shows)
            strict   the same script, asked by every request of a strict
                     plan
            free     the free tier's lease script, toll_free_lease 1, so
                     that every free call asks Redis
            meter    the meter's flush script, three buyers
            drain    toll-settle, the daemon and --once
            tollctl  the operator's CLI
    faults  noscript oom readonly wrongtype loading lost (and WRONGTYPE
            at each other name the meter and the drain write)

For each: no crash (the fixtures read the error log), nothing lost or
counted twice, at most one log line per worker naming the fault for the
whole episode (not one per request or per retry), and the documented
answer to the client.  nginx runs one worker, so "one per worker" is one.
"""

import json
import re
import subprocess
import time

import pytest

from helpers import client
from helpers.faults import FAULTS, Faults, fault_lines
from helpers.keys import raw_key, tollctl_path
from helpers.meter import meter_http, meter_upstream, proxy_to, \
    upstream_block, usage, wait_usage
from helpers.problem import check_problem
from helpers.procs import wait_for
from helpers.settle import Settle, day, ledger_check, ledger_usage, \
    preload_env, redis_usage_left, usage_key, write_usage

assert meter_upstream  # a fixture, used by name

PROXY_M = proxy_to("meterapi")

LOCATIONS = """
        location /api/ {
            toll on;
            %(proxy)s
        }
        location /svc/ {
            toll on;
            toll_service svc provider=acme price=0.05;
            %(proxy)s
        }
        location /free/ {
            toll on;
            toll_service fsvc provider=acme price=0.05 free_calls=1000;
            %(proxy)s
        }
""" % {"proxy": PROXY_M}

HTTP = """
    toll_plan gold rate=100000r/d;
    toll_plan strictp rate=100000r/d strict;
    toll_default_plan gold;
    toll_free_lease 1;
    toll_free_tier_fallback closed;
"""


@pytest.fixture
def faults(redis_server, tmp_path):
    f = Faults(redis_server, tmp_path)
    yield f
    f.end()
    f.close()


@pytest.fixture
def gate(start_nginx, meter_upstream, redis_server):
    return start_nginx(http_extra=meter_http() + HTTP + upstream_block(
        "meterapi", meter_upstream.port), locations=LOCATIONS, workers=1,
        redis_timeout="300ms")


def get(ngx, path, key):
    return client.request(ngx.port, path=path, headers=[key.bearer()])


def wait_refused(faults, fault, n=2):
    """Until Redis has refused n commands with the fault's class: the
    path has met the fault, and retried."""
    wait_for(lambda: faults.errors_seen(fault) >= n, 10, interval=0.02,
             what="redis to refuse %d commands with %s" % (n, fault))


# ====================================================== the nginx paths

# (path, fault) combinations that cannot happen
SKIP = {
    ("lookup", "noscript"): "a key lookup is HMGET: no script to forget",
}

# bugs found and left for the owners of the files (see the report)
XFAIL = {}

# how many lines naming the fault the episode may log (per worker)
ONE = 1


class Lookup:
    """An uncached key needs Redis: what it answers decides."""

    log_re = r"key lookup|key record"
    during_status = {"noscript": 200, "oom": 200, "readonly": 200,
                     "wrongtype": 401, "loading": 503, "lost": 401}
    log_lines = {"noscript": 0, "oom": 0, "readonly": 0, "wrongtype": ONE,
                 "loading": ONE, "lost": None}

    def setup(self, env):
        env.keys = [raw_key(env.rs, owner="lk%d" % i) for i in range(3)]
        return "toll:key:{%s}" % env.keys[0].key_id

    def during(self, env, fault):
        want = self.during_status[fault]
        for i in range(3):
            k = env.keys[0] if fault == "wrongtype" else env.keys[i]
            r = get(env.ngx, "/api/x", k)
            if fault == "lost":
                # the restart is an outage first (503), then the store
                # answers: the key is gone
                r = wait_for(lambda: _not503(get(env.ngx, "/api/x", k)),
                             10, interval=0.05, what="redis to answer")
            if want == 503:
                check_problem(r, 503, "store_unavailable")
                assert r.header("Retry-After") == "1"
            elif want == 401:
                check_problem(r, 401, "unauthorized")
            else:
                assert r.status == want, (r, r.body)

    def after(self, env, fault):
        k = raw_key(env.rs, owner="lk-after")
        wait_for(lambda: get(env.ngx, "/api/x", k).status == 200, 10,
                 interval=0.05, what="an uncached key to pass again")


def window_sum(rc, name):
    """The requests Redis counts in the day windows of a limit hash."""
    return sum(int(v) for f, v in rc.hgetall(name).items()
               if re.fullmatch(r"d:\d+", f))


class Limits:
    """Limits fail open to the node; counts wait and arrive once."""

    log_re = r"limit sync"
    log_lines = {"noscript": 0, "oom": ONE, "readonly": ONE,
                 "wrongtype": ONE, "loading": ONE, "lost": None}

    def setup(self, env):
        env.k = raw_key(env.rs, owner="lim")
        return self._sync_setup(env)

    def _sync_setup(self, env):
        for _ in range(5):
            assert get(env.ngx, "/api/x", env.k).status == 200
        rc = env.rs.client
        names = wait_for(lambda: [n for n in rc.scan_iter(
            match="toll:rl:*") if env.k.key_id in n], 10,
            what="the key's limit hash")
        assert len(names) == 1, names
        env.rl = names[0]
        wait_for(lambda: window_sum(rc, env.rl) == 5, 10,
                 what="5 requests counted in redis")
        return env.rl

    def during(self, env, fault):
        for _ in range(5):
            r = get(env.ngx, "/api/x", env.k)
            assert r.status == 200, (r, r.body)
        if fault in ("oom", "readonly", "wrongtype"):
            wait_refused(env.faults, fault)

    def after(self, env, fault):
        if fault == "lost":
            env.k.write(env.rs.client)
        for _ in range(5):
            assert get(env.ngx, "/api/x", env.k).status == 200
        # what Redis lost, or the operator deleted, it cannot count
        want = 10 if fault in ("lost", "wrongtype") else 15
        rc = env.rs.client
        last = []

        def counted():
            last[:] = [window_sum(rc, env.rl)]
            return last[0] == want

        wait_for(counted, 10, interval=0.05,
                 what="redis to count %d requests (last %r)" % (want, last))
        assert rc.pttl(env.rl) > 0


class Free:
    """The free tier is money: closed fallback answers 503, and Redis's
    count of claimed free calls equals the free calls served."""

    log_re = r"free-tier lease"
    log_lines = {"noscript": 0, "oom": ONE, "readonly": ONE,
                 "wrongtype": ONE, "loading": ONE, "lost": None}

    def setup(self, env):
        env.k = raw_key(env.rs, owner="freebuyer")
        for _ in range(2):
            r = get(env.ngx, "/free/x", env.k)
            assert r.status == 200 and \
                r.header("X-Toll-Free-Tier") == "true", (r, r.headers)
        assert claimed(env.rs.client) == 2
        env.served = 2
        return "toll:free:{freebuyer}"

    def during(self, env, fault):
        for _ in range(2):
            r = get(env.ngx, "/free/x", env.k)
            if fault == "noscript":
                # the lease script goes by its SHA1; Redis forgot it, and
                # it is sent again in full: the call never sees that
                assert r.status == 200 and \
                    r.header("X-Toll-Free-Tier") == "true", (r, r.headers)
                env.served += 1
                env.faults.begin("noscript")
            elif fault == "lost":
                # an outage first, then a store that forgot the count
                r = wait_for(lambda: _not503(get(env.ngx, "/free/x",
                                                 env.k)), 10,
                             interval=0.05, what="redis to answer")
                assert r.status == 200, (r, r.body)
                env.served += r.header("X-Toll-Free-Tier") == "true"
            else:
                check_problem(r, 503, "store_unavailable")

    def after(self, env, fault):
        if fault == "lost":
            env.k.write(env.rs.client)
        # a count Redis lost, or the operator deleted, is taken up again
        # from what the node knows was claimed
        for _ in range(2):
            r = wait_for(lambda: _ok(get(env.ngx, "/free/x", env.k)), 10,
                         interval=0.05, what="a free call to pass")
            assert r.header("X-Toll-Free-Tier") == "true", r.headers
            env.served += 1
        # a lease granted to a call that had gone is the node's: at most
        # toll_free_lease (1) claimed and not served yet
        assert env.served <= claimed(env.rs.client) <= env.served + 1, \
            (claimed(env.rs.client), env.served)


class Strict(Limits):
    """A strict plan asks Redis at every request: refused, the node
    decides alone, and says so once."""

    log_re = r"limit sync|strict limit"

    def setup(self, env):
        env.k = raw_key(env.rs, owner="strict", plan="strictp")
        return self._sync_setup(env)


def _not503(r):
    return r if r.status != 503 else None


def _ok(r):
    return r if r.status == 200 else None


def claimed(rc):
    v = rc.hget("toll:free:{freebuyer}", "fsvc")
    return 0 if v is None else int(v)


class Meter:
    """Counts wait in the zone and are flushed once Redis takes them."""

    log_re = r"meter's batch|usage index"
    log_lines = {"noscript": 0, "oom": ONE, "readonly": ONE,
                 "wrongtype": ONE, "wrongtype:days": ONE,
                 "wrongtype:index": ONE, "loading": ONE,
                 "lost": None}

    def setup(self, env):
        env.buyers = [raw_key(env.rs, owner="mb%d" % i) for i in range(3)]
        for k in env.buyers:
            assert get(env.ngx, "/svc/x", k).status == 200
        wait_usage(env.rs.client, self.expect(env, 1))
        return None

    def key_for(self, env, fault):
        if fault == "wrongtype:days":
            return "toll:usage:{mb0}:days"
        if fault == "wrongtype:index":
            return "toll:usage:index"
        return usage_key("mb0", day())

    @staticmethod
    def expect(env, n, first=None):
        out = {}
        for i, k in enumerate(env.buyers):
            c = first if (i == 0 and first is not None) else n
            out[(k.owner, "svc")] = {"calls": c, "paid_calls": c,
                                     "amount_micros": c * 50000}
        return out

    def during(self, env, fault):
        for k in env.buyers:
            r = get(env.ngx, "/svc/x", k)
            assert r.status == 200, (r, r.body)
        if fault.startswith(("oom", "readonly", "wrongtype")):
            # each batch refused, and retried, at least once
            # (one SADD to the index per flush: three)
            wait_refused(env.faults, fault.split(":")[0],
                         3 if fault == "wrongtype:index" else 4)
            # ... the meter's own (the limit syncs, every 100 ms, meet
            # the fault too and may make up those refusals before the
            # meter's next tick)
            kind = fault.split(":")[0]
            wait_for(lambda: fault_lines(env.ngx.error_log_text(), kind,
                                         self.log_re), 5, interval=0.02,
                     what="the meter to meet %s" % fault)

    def after(self, env, fault):
        if fault == "lost":
            for k in env.buyers:
                k.write(env.rs.client)
        for k in env.buyers:
            wait_for(lambda: _ok(get(env.ngx, "/svc/x", k)), 10,
                     interval=0.05, what="a call to pass")
        if fault == "lost":
            want = self.expect(env, 2)
        elif fault == "wrongtype":
            want = self.expect(env, 3, first=2)   # mb0's hash was replaced
        else:
            want = self.expect(env, 3)
        wait_usage(env.rs.client, want)
        time.sleep(0.5)    # no retry may add to it afterwards
        assert usage_exact(env.rs.client, want)
        assert env.upstream.total == 9


def usage_exact(rc, want):
    from helpers.meter import project
    got = project(usage(rc), ("calls", "paid_calls", "amount_micros"))
    assert got == want, (got, want)
    return True


PATHS = {"lookup": Lookup, "limits": Limits, "strict": Strict,
         "free": Free, "meter": Meter}

# the meter writes three names besides the usage hash
CASES = [(p, f) for p in PATHS for f in FAULTS] + [
    ("meter", "wrongtype:days"), ("meter", "wrongtype:index")]


def case_param(path, fault):
    marks = []
    if (path, fault) in SKIP:
        marks.append(pytest.mark.skip(reason=SKIP[(path, fault)]))
    if (path, fault) in XFAIL:
        marks.append(pytest.mark.xfail(strict=True,
                                       reason=XFAIL[(path, fault)]))
    return pytest.param(path, fault, marks=marks,
                        id="%s-%s" % (path, fault))


class Env:
    pass


@pytest.mark.parametrize("path,fault", [case_param(p, f) for p, f in CASES])
def test_nginx_path(gate, redis_server, meter_upstream, faults, path,
                    fault):
    env = Env()
    env.ngx, env.rs, env.faults = gate, redis_server, faults
    env.upstream = meter_upstream
    p = PATHS[path]()
    key = p.setup(env)
    if hasattr(p, "key_for"):
        key = p.key_for(env, fault)
    kind = fault.split(":")[0]
    log_before = len(gate.error_log_text())

    faults.begin(kind, key=key)
    p.during(env, fault)
    faults.end()
    p.after(env, fault)

    text = gate.error_log_text()[log_before:]
    want = p.log_lines[fault]
    if want is not None:
        lines = fault_lines(text, kind, p.log_re)
        assert len(lines) == want, \
            "%d lines name %s, want %d:\n%s" % (len(lines), kind, want,
                                                "\n".join(lines))
    # whatever they say: no flood of the path's lines (per worker)
    flood = [ln for ln in text.splitlines() if re.search(p.log_re, ln)
             and re.search(r"\[(error|warn)\]", ln)]
    assert len(flood) <= 1, "\n".join(flood)


# ============================================================ toll-settle

def settle_cases():
    out = []
    for f in FAULTS + ("wrongtype:usage", "wrongtype:mirror"):
        out.append(pytest.param(f, id="drain-" + f))
    return out


def stored_usage(rc, buyers, calls):
    want = {}
    for b in buyers:
        write_usage(rc, b, "svc", "acme", calls=calls)
        want[(b, day(), "svc")] = calls
    return want


def ledger_calls(settle):
    return {k: v["calls"] for k, v in ledger_usage(settle.ledger).items()}


def drained(rc):
    return not redis_usage_left(rc) and rc.scard("toll:drain:open") == 0


@pytest.mark.parametrize("fault", settle_cases())
def test_drain(redis_server, faults, tmp_path, fault):
    """toll-settle meets the fault with usage waiting: --once exits 69
    with one line; the daemon retries, says it once, and drains
    everything exactly once when the fault ends."""
    rc = redis_server.client
    settle = Settle(redis_server, tmp_path / "ledger.db")
    kind = fault.split(":")[0]
    try:
        want = stored_usage(rc, ["d1", "d2"], 3)
        if fault == "noscript":
            d = settle.start(interval="100ms")
            wait_for(lambda: drained(rc), 20, what="the first drain")
            faults.begin("noscript")
            more = stored_usage(rc, ["d1", "d2"], 2)
            wait_for(lambda: drained(rc), 20, what="the drain after "
                     "SCRIPT FLUSH")
            assert settle.stop(d) == 0
            for k in want:
                want[k] += more[k]
            assert ledger_calls(settle) == want
            assert "refused" not in Settle.log_text(d), Settle.log_text(d)
            return

        if fault == "lost":
            d = settle.start(interval="100ms")
            wait_for(lambda: drained(rc), 20, what="the first drain")
            faults.begin("lost")
            more = stored_usage(rc, ["d1", "d3"], 2)
            wait_for(lambda: drained(rc), 20, what="the drain after "
                     "the restart")
            assert settle.stop(d) == 0
            want[("d1", day(), "svc")] += 2
            want[("d3", day(), "svc")] = 2
            assert ledger_calls(settle) == want
            ledger_check(settle.ledger)
            return

        key = None
        if fault == "wrongtype":
            key = "toll:drain:open"
        elif fault == "wrongtype:usage":
            key = usage_key("bad", day())
        elif fault == "wrongtype:mirror":
            key = usage_key("d1", day()) + ":drained"
        faults.begin(kind, key=key)
        if fault == "wrongtype:mirror":
            # d1's usage waits, said once; every other buyer settles
            for _ in range(2):
                p = settle.once()
                assert p.returncode == 0, p.stderr
                assert len(fault_lines(p.stderr, kind)) <= 1, p.stderr
            assert ledger_calls(settle) == {("d2", day(), "svc"): 3}
            assert rc.hget(usage_key("d1", day()), "svc:calls") == "3"
            faults.end()
            p = settle.once()
            assert p.returncode == 0 and p.stderr == "", p.stderr
            assert ledger_calls(settle) == want
            assert rc.hget(key, "svc:calls") == "3"
            ledger_check(settle.ledger)
            return
        if fault == "wrongtype:usage":
            rc.sadd("toll:usage:index", key)
            # a hash that is not one is set aside; the rest is posted
            p = settle.once()
            assert p.returncode == 0, p.stderr
            assert len(p.stderr.strip().splitlines()) == 1, p.stderr
            assert "quarantined" in p.stderr, p.stderr
            assert ledger_calls(settle) == want
            assert rc.hexists("toll:drain:quarantine",
                              [c for c in rc.hkeys("toll:drain:quarantine")
                               if "{bad}" in c][0])
            p = settle.once()
            assert p.returncode == 0 and p.stderr == "", p.stderr
            ledger_check(settle.ledger)
            # the operator sees it, with no counts
            p = subprocess.run([tollctl_path(), "--redis",
                                redis_server.address, "quarantine", "list",
                                "--json"], capture_output=True, text=True,
                               timeout=30, env=preload_env())
            assert p.returncode == 0, p.stderr
            (q,) = json.loads(p.stdout)
            assert q["buyer"] == "bad" and q["fields"] == {}, q
            assert "not a hash" in q["reason"], q
            return

        p = settle.once()
        assert p.returncode == 69, (p.returncode, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and fault_lines(p.stderr, kind), p.stderr

        d = settle.start(interval="100ms")
        wait_refused(faults, kind, 5)
        faults.end()
        wait_for(lambda: drained(rc), 20, what="the drain after the fault")
        assert settle.stop(d) == 0
        text = Settle.log_text(d)
        assert len(fault_lines(text, kind)) == 1, text
        assert ledger_calls(settle) == want
        ledger_check(settle.ledger)
    finally:
        settle.close()


# ================================================================ tollctl

TOLLCTL_CASES = [
    pytest.param("noscript", marks=pytest.mark.skip(
        reason="tollctl sends its one script whole (EVAL): NOSCRIPT "
               "cannot happen"), id="tollctl-noscript"),
    pytest.param("oom", id="tollctl-oom"),
    pytest.param("readonly", id="tollctl-readonly"),
    pytest.param("wrongtype", id="tollctl-wrongtype"),
    pytest.param("loading", id="tollctl-loading"),
    pytest.param("lost", id="tollctl-lost"),
]


@pytest.mark.parametrize("fault", TOLLCTL_CASES)
def test_tollctl(redis_server, faults, fault):
    """A refused command: one line on stderr naming the fault, exit 69
    (EX_UNAVAILABLE), nothing written half."""
    rc = redis_server.client
    before = raw_key(redis_server, owner="ctl-before")
    faults.begin(fault, key="toll:keys")
    p = subprocess.run([tollctl_path(), "--redis", redis_server.address,
                        "key", "create", "--owner", "ctl"],
                       capture_output=True, text=True, timeout=30,
                       env=preload_env())
    if fault == "lost":
        # an empty Redis is no error: the key is made
        assert p.returncode == 0, p.stderr
        return
    assert p.returncode == 69, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert fault_lines(p.stderr, fault), p.stderr
    assert p.stdout == ""
    faults.end()
    # nothing of the refused key was written
    owners = [rc.hget(n, "owner") for n in rc.scan_iter(match="toll:key:*")]
    assert "ctl" not in owners, owners
    assert before.key_id in (rc.smembers("toll:keys") or {before.key_id})
