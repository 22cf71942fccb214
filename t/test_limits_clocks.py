"""Rate limits and clocks (docs/limits.md, "Clocks"): a node whose wall
clock is far ahead of the others', or a wall clock stepped back, must not
lock a key out on any node, and the limit must still hold across them.

libfaketime moves a node's wall clock (FAKETIME_DONT_FAKE_MONOTONIC=1:
as NTP does, the monotonic clock runs on untouched).  Every wait is a
poll with a deadline; requests to the second node are paced so that its
sync rounds (100 ms) see the first node's counts.
"""

import os
import time

import pytest

from helpers import client
from helpers.keys import raw_key
from helpers.limits import check_limited
from helpers.procs import PROXY, wait_for


FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

PLANS = """
    toll_limit_sync 100ms;
    toll_plan bkt rate=60r/m burst=10;
    toll_plan win rate=10r/m;
    toll_plan bkt5 rate=60r/m burst=5;
    toll_plan win5 rate=5r/s;
"""

API = """
        location /api/ {
            toll on;
            %s
        }
""" % PROXY


def get(ngx, key):
    return client.request(ngx.port, path="/api/x", headers=[key.bearer()])


def rl_name(key):
    return "toll:rl:{%s}" % key.key_id


def window_count(rc, key):
    return sum(int(v) for f, v in rc.hgetall(rl_name(key)).items()
               if f.startswith("m:"))


def need_faketime():
    if not os.path.exists(FAKETIME_LIB):
        pytest.skip("faketime is not installed")
    if os.environ.get("TOLL_PRELOAD", "").strip():
        pytest.skip("libfaketime and the ASan runtime deadlock at start; "
                    "make test runs this")


def start_faked(start_nginx, monkeypatch, **env):
    """An nginx whose wall clock libfaketime moves as env says."""
    monkeypatch.setenv("LD_PRELOAD", FAKETIME_LIB)
    monkeypatch.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # nginx's workers keep only the variables named by "env"
    keep = "".join("env %s;\n" % k for k in
                   ["FAKETIME_DONT_FAKE_MONOTONIC"] + sorted(env))
    try:
        return start_nginx(workers=1, http_extra=PLANS, locations=API,
                           main_extra=keep)
    finally:
        monkeypatch.delenv("LD_PRELOAD", raising=False)
        for k in env:
            monkeypatch.delenv(k, raising=False)


def paced(ngx, key, n, period=0.1):
    out = []
    for _ in range(n):
        out.append(get(ngx, key).status)
        time.sleep(period)      # the load's pace, not a wait for a result
    return out


SKEW_S = 30     # far more than the bucket's 10 s tolerance


def test_node_ahead_does_not_lock_out_the_others(start_nginx, redis_server,
                                                 monkeypatch):
    """Node A's wall clock is 30 s ahead.  A bucket of 10 (a token a
    second): after A admitted 3, node B admits the 7 left (it was refused
    everything: A's theoretical arrival time, 30 s in B's future, won the
    merge).  A window of 10 a minute: after A admitted 4, B admits 6 and
    refuses the 7th (A's counts sat 30 s in B's future, unseen)."""
    need_faketime()
    rc = redis_server.client
    a = start_faked(start_nginx, monkeypatch, FAKETIME="+%d" % SKEW_S)
    b = start_nginx(workers=1, http_extra=PLANS, locations=API)

    # the bucket
    kb = raw_key(redis_server, owner="skew-b", plan="bkt")
    assert [get(a, kb).status for _ in range(3)] == [200] * 3
    wait_for(lambda: rc.hexists(rl_name(kb), "b"), 5, interval=0.02,
             what="node A's round in Redis")
    got = paced(b, kb, 7)
    assert got == [200] * 7, ("node B refused the key after node A, %d s "
                              "ahead, used 3 of 10: %s" % (SKEW_S, got))
    # and the bucket still holds across both: 10 used within ~1 s
    rest = [get(b, kb) for _ in range(3)]
    assert any(r.status == 429 for r in rest), [r.status for r in rest]
    for r in rest:
        if r.status == 429:
            check_limited(r, policy_name="burst")

    # the window
    kw = raw_key(redis_server, owner="skew-w", plan="win")
    assert [get(a, kw).status for _ in range(4)] == [200] * 4
    wait_for(lambda: window_count(rc, kw) == 4, 5, interval=0.02,
             what="node A's 4 in Redis")
    got = paced(b, kw, 7)
    assert got == [200] * 6 + [429], ("node B, with node A %d s ahead: "
                                      "%s" % (SKEW_S, got))

    # A, ahead, is held by what B admitted too, once its round has told
    # it (requests before that round's answer are decided alone)
    seen = []

    def a_refuses():
        r = get(a, kw)
        seen.append(r.status)
        return r if r.status == 429 else None

    check_limited(wait_for(a_refuses, 3, interval=0.05,
                           what="node A to refuse the full window"),
                  policy_name="minute")
    # the bound of docs/limits.md: what A admits in a round and a trip
    assert seen.count(200) <= 3, seen


def test_clock_stepped_back_does_not_lock_out(start_nginx, redis_server,
                                              tmp_path, monkeypatch):
    """A bucket of 5 (a token a second) and a window of 5 a second, both
    used up; then the node's wall clock steps back 120 s.  Each admits
    again once it has refilled (about a second), not 120 s later."""
    need_faketime()
    rcfile = tmp_path / "faketime.rc"
    rcfile.write_text("+0\n")
    ngx = start_faked(start_nginx, monkeypatch,
                      FAKETIME_TIMESTAMP_FILE=str(rcfile),
                      FAKETIME_NO_CACHE="1")
    kb = raw_key(redis_server, owner="step-b", plan="bkt5")
    kw = raw_key(redis_server, owner="step-w", plan="win5")
    for k, policy in ((kb, "burst"), (kw, "second")):
        got = [get(ngx, k) for _ in range(6)]
        assert [r.status for r in got] == [200] * 5 + [429], \
            [r.status for r in got]
        check_limited(got[5], policy_name=policy)

    rcfile.write_text("-120\n")
    t0 = time.monotonic()
    for k, what in ((kb, "the bucket"), (kw, "the window")):
        wait_for(lambda: get(ngx, k).status == 200, 5, interval=0.1,
                 what="%s to admit again after the clock stepped back "
                      "120 s" % what)
        print("\n%s admitted again %.0f ms after the step"
              % (what, (time.monotonic() - t0) * 1000))
