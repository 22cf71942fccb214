"""Helpers for the concurrency suites that kill nginx's worker
(t/test_limits*.py).

    slow_locations      the /slow/ location in front of a SlowUpstream
    kill_only_worker    SIGKILL the one worker as a crash would, and wait
                        for the master to respawn it and say so
    wait_first_pass     repeat a request until it passes, timing it
"""

import os
import re
import signal
import time

from helpers.procs import pid_alive, wait_for


def slow_locations(slow):
    return """
        location /slow/ {
            toll on;
            proxy_pass http://127.0.0.1:%d;
            proxy_read_timeout 60s;
        }
""" % slow.port


def kill_only_worker(ngx):
    """SIGKILL nginx's one worker; wait for its successor, its end and the
    master's alert about it.  Returns (the killed pid, the set of the new
    worker's pid)."""
    (old,) = ngx.worker_pids()
    os.kill(old, signal.SIGKILL)

    def respawned():
        w = ngx.worker_pids()
        return w if len(w) == 1 and old not in w else None

    new = wait_for(respawned, 10, what="a new worker after SIGKILL")
    ngx.known_workers |= new
    wait_for(lambda: not pid_alive(old), 5, what="the old worker gone")
    # the master says so, once
    wait_for(lambda: re.search(r"\[alert\] .*%d exited on signal 9"
                               % old, ngx.error_log_text()), 5,
             what="the master's alert about the killed worker")
    return old, new


def wait_first_pass(request, what, since):
    """request() again and again (8 s at most) until it answers 200;
    prints how long that took after `since`.  Returns the response."""
    t0 = time.monotonic()
    r = wait_for(lambda: _passed(request()), 8, interval=0.05, what=what)
    print("\nfirst 200 %.0f ms after %s"
          % ((time.monotonic() - t0) * 1000, since))
    return r


def _passed(resp):
    return resp if resp.status == 200 else None
