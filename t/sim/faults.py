"""The faults of the simulation, done to the real processes.

    reload        nginx -s reload of one instance (waits for the new
                  generation of workers)
    worker_kill   SIGKILL of one worker of one instance (waits for the
                  master to replace it); its (start, end) is kept, for the
                  check to know which calls it may have caught
    redis_kill    SIGKILL of redis-server, down for a while, restarted on
                  the same port and append-only file
    redis_pause   CLIENT PAUSE <ms> ALL: the socket is open, nothing is
                  answered until the pause ends (commands queue, then run)
    settle_kill   SIGKILL of toll-settle, restarted a moment later

Each returns a line for the run's log.  The durations (how long Redis
stays down) are the schedule's, drawn from the seed; nothing here waits
to decide a result.
"""

import os
import signal
import time

from helpers.procs import pid_alive, wait_for


def do(cluster, fault):
    kind = fault["kind"]
    inst = cluster.instances[fault["instance"]]
    if kind == "reload":
        inst.ngx.reload()
        return "reload %s" % inst.name
    if kind == "worker_kill":
        old = inst.ngx.worker_pids()
        victim = sorted(old)[fault["worker"] % len(old)]
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not pid_alive(victim), 10,
                 what="worker %d to die" % victim)

        def respawned():
            cur = inst.ngx.worker_pids()
            return len(cur) == inst.ngx.workers and cur - old
        wait_for(respawned, 15, what="the master to replace worker %d"
                 % victim)
        inst.ngx.known_workers |= inst.ngx.worker_pids()
        inst.kills.append((t0, time.monotonic()))
        return "SIGKILL worker %d of %s" % (victim, inst.name)
    if kind == "redis_kill":
        cluster.redis.kill()
        time.sleep(fault["down_s"])
        cluster.redis.start()
        return "redis SIGKILL, down %.1fs, restarted" % fault["down_s"]
    if kind == "redis_pause":
        cluster.redis.client.execute_command("CLIENT", "PAUSE",
                                             fault["pause_ms"], "ALL")
        cluster.redis.paused_until = (time.monotonic()
                                      + fault["pause_ms"] / 1000.0)
        return "redis CLIENT PAUSE %dms" % fault["pause_ms"]
    if kind == "settle_kill":
        p = cluster.daemon
        if p.poll() is not None:
            return "toll-settle not running: nothing to kill"
        p.killed_by_us = True
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        time.sleep(fault["down_s"] / 5)
        cluster.start_daemon()
        return "toll-settle SIGKILL, restarted"
    raise ValueError(kind)


def wait_pause_over(cluster):
    """Waits for a CLIENT PAUSE to end (a paused server holds every
    client's commands, CLIENT UNPAUSE too)."""
    left = cluster.redis.paused_until - time.monotonic()
    if left > 0:
        time.sleep(left)
    cluster.redis.paused_until = 0.0
