#!/usr/bin/env python3
"""toll's seeded fault simulation (docs/simulation.md).

    python3 t/sim/run.py [--seed N] [--minutes M] [--faults SPEC]
                         [--build DIR] [--workdir DIR] [--keep]

Starts two nginx instances (2 workers each) with the module, one Redis,
toll-settle and a counting upstream, all on 127.0.0.1; plays the
schedule the seed draws (calls of every kind, faults) for M minutes;
quiesces; and checks, per buyer, service and provider, that the upstream,
the meter and the ledger agree to the micro-unit, that no buyer got more
free calls than free_calls, that the ledger is balanced and that
settlement kept running.  Exit 0 when every check passed, 1 otherwise;
a failing run prints the command that replays its schedule.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import calls as callmod                  # noqa: E402
import check                             # noqa: E402
import faults as faultmod                # noqa: E402
import schedule                          # noqa: E402
from cluster import BALANCES, Cluster    # noqa: E402
from helpers.procs import wait_for       # noqa: E402
from helpers.settle import tollctl_bin   # noqa: E402

# nginx's master logs both when it reaps a worker we SIGKILLed
KILL_LOG = (r"exited on signal 9", r"shared memory zone .* was locked by")


def log(msg):
    print("sim: %s" % msg, flush=True)


class Run:
    def __init__(self, args, on):
        self.args = args
        self.on = on
        self.cluster = None
        self.outcomes = []
        self.lock = threading.Lock()
        self.settle_lock = threading.Lock()
        self.stop = threading.Event()
        self.events = []                # (t, line) of the fault lane
        self.settle_deaths = []         # toll-settle exits we did not cause
        self.errors = []                # exceptions in the driver itself
        self.t_start = None

    # -- lanes

    def lane(self, plan):
        ln = callmod.Lane(self.cluster)
        try:
            for offset, call in plan:
                if self.stop.is_set():
                    break
                delay = self.t_start + offset - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
                if time.monotonic() > self.deadline:
                    with self.lock:
                        self.skipped += 1
                    continue
                try:
                    outs = ln.run(call)
                except Exception:       # noqa: BLE001 -- reported
                    with self.lock:
                        self.errors.append(traceback.format_exc())
                    continue
                with self.lock:
                    self.outcomes.extend(outs)
        finally:
            ln.close()

    def fault_lane(self, plan):
        for offset, fault in plan:
            delay = self.t_start + offset - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            if self.stop.is_set() or time.monotonic() > self.deadline:
                return
            self.watch_settle()
            if fault.get("skipped"):
                continue
            try:
                line = faultmod.do(self.cluster, fault)
            except Exception:           # noqa: BLE001 -- reported
                self.errors.append("fault %r:\n%s"
                                   % (fault, traceback.format_exc()))
                continue
            self.events.append((time.monotonic() - self.t_start, line))
            log("%6.1fs %s" % (self.events[-1][0], line))

    def watch_settle(self):
        """A toll-settle that exited without our SIGKILL stopped on its
        own: settlement is not running.  It is not restarted (a record
        that stops it would stop the next one too), and the run goes on,
        so that the meter is still checked against the upstream."""
        with self.settle_lock:
            p = self.cluster.daemon
            if p is None or p.poll() is None or p.killed_by_us:
                return
            if any(d["pid"] == p.pid for d in self.settle_deaths):
                return
            text = self.cluster.settle.log_text(p)
            self.settle_deaths.append({
                "pid": p.pid, "rc": p.returncode,
                "t": time.monotonic() - self.t_start,
                "log": "\n".join(text.strip().splitlines()[-5:])})
        log("toll-settle exited by itself (rc %s): %s"
            % (p.returncode, self.settle_deaths[-1]["log"]))

    # -- the run

    def play(self, plan):
        self.t_start = time.monotonic()
        self.deadline = self.t_start + plan["duration_s"] + 60.0
        self.skipped = 0
        threads = [threading.Thread(target=self.lane, args=(p,),
                                    name="lane%d" % i, daemon=True)
                   for i, p in enumerate(plan["lanes"])]
        ft = threading.Thread(target=self.fault_lane,
                              args=(plan["faults"],), name="faults",
                              daemon=True)
        for t in threads + [ft]:
            t.start()
        watcher_stop = threading.Event()

        def watcher():
            while not watcher_stop.wait(0.5):
                self.watch_settle()
        wt = threading.Thread(target=watcher, daemon=True)
        wt.start()
        last = time.monotonic()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(1.0)
            if time.monotonic() - last >= 15:
                last = time.monotonic()
                with self.lock:
                    n = len(self.outcomes)
                log("%6.1fs %d requests done, upstream received %d"
                    % (last - self.t_start, n, self.cluster.upstream.total))
        self.stop.set()
        ft.join(60)
        watcher_stop.set()
        wt.join(5)
        self.watch_settle()

    def quiesce(self, report):
        """Faults off, Redis answering, the upstream idle, every meter
        count flushed (backlog 0, then a graceful stop), toll-settle given
        the time to drain all by itself, then stopped (SIGTERM, exit 0),
        then --once until nothing is left."""
        c = self.cluster
        faultmod.wait_pause_over(c)
        if not c.redis.up:
            c.redis.start()
        idle = c.upstream.wait_idle(30)
        report.check("the upstream answered every call it received",
                     idle, "requests still being answered after 30 s")
        for inst in c.instances:
            try:
                wait_for(lambda: inst.meter_backlog() == 0, 30,
                         interval=0.1, what="%s meter backlog 0"
                         % inst.name)
            except TimeoutError as e:
                report.check("%s flushed its meter" % inst.name, False,
                             str(e))
            inst.ngx.stop()
        self.watch_settle()
        rc = c.redis.client
        daemon = c.daemon
        alive = daemon.poll() is None
        if alive:
            try:
                wait_for(lambda: (rc.scard("toll:usage:index") == 0
                                  and rc.scard("toll:drain:open") == 0
                                  and not _usage_hashes(rc)), 60,
                         interval=0.1, what="toll-settle to drain")
                drained = True
            except TimeoutError:
                drained = False
            report.check("toll-settle drained everything by itself",
                         drained, "usage left in Redis after 60 s")
            code = c.settle.stop(daemon)
            report.check("toll-settle stopped cleanly (SIGTERM, exit 0)",
                         code == 0, "exit %s" % code)
        report.check(
            "settlement still running (toll-settle never stopped by "
            "itself)", alive and not self.settle_deaths,
            "\n".join("at %.1fs exit %s: %s" % (d["t"], d["rc"], d["log"])
                      for d in self.settle_deaths))
        if self.settle_deaths:
            # what stopped it: the claims it could not post
            for claim in sorted(rc.smembers("toll:drain:open")):
                report.note("open claim %s: %r" % (claim, rc.hgetall(claim)))
        once = []
        for _ in range(5):
            p = c.settle.once(timeout=120)
            once.append(p)
            if p.returncode != 0 or (rc.scard("toll:usage:index") == 0
                                     and rc.scard("toll:drain:open") == 0
                                     and not _usage_hashes(rc)):
                break
        last = once[-1]
        report.check("toll-settle --once drains what is left", (
            last.returncode == 0 and not _usage_hashes(rc)),
            "exit %d: %s" % (last.returncode, last.stderr.strip()[-500:]))

    def verify(self, report):
        c = self.cluster
        records = c.upstream.records()
        exp, anomalies = check.expectations(self.outcomes, records,
                                            c.instances)
        report.check("every call reached the upstream at most once, as "
                     "its buyer, from the location it was sent to",
                     not anomalies, "\n".join(anomalies[:20]))
        met = check.meter(c.redis.client)
        led = check.ledger(c.settle.ledger)
        figures = check.compare(report, exp, met, led)
        figures["upstream_received"] = len({
            r["id"] for r in records if r["service"] in check.SERVICES})
        tc = subprocess.run([tollctl_bin(), "--ledger", c.settle.ledger,
                             "ledger", "check"], capture_output=True,
                            text=True, timeout=60)
        report.check("tollctl ledger check", tc.returncode == 0,
                     tc.stdout[-1500:] + tc.stderr[-500:])
        tr = subprocess.run([tollctl_bin(), "--redis", c.redis.address,
                             "--ledger", c.settle.ledger, "reconcile"],
                            capture_output=True, text=True, timeout=60)
        report.check("tollctl reconcile (Redis recorded = ledger)",
                     tr.returncode == 0,
                     tr.stdout[-1500:] + tr.stderr[-500:])
        figures.update(check.balances(report, c.redis.client,
                                      c.settle.ledger, BALANCES))
        report.note("prepaid: %d of %d micro-units credited were spent"
                    % (figures["spent"], figures["credited"]))
        free = {k: int(v) for k, v in _free_claimed(c.redis.client)}
        over = {k: v for k, v in free.items() if v > 20}
        report.check("free-tier leases in Redis never beyond free_calls",
                     not over, repr(over))
        bad = []
        for inst in c.instances:
            allowed = KILL_LOG if inst.kills else ()
            bad += ["%s: %s" % (inst.name, b)
                    for b in inst.ngx.bad_lines(allowed)]
        report.check("no [alert], [crit], [emerg] in the nginx logs "
                     "(besides the master reaping a killed worker)",
                     not bad, "\n".join(bad[:20]))
        report.check("the driver itself ran without error",
                     not self.errors, "\n".join(self.errors[:3]))
        logs = []
        for inst in c.instances:
            logs += inst.sim_log()
        kinds = check.per_kind(self.outcomes, records, logs, c.instances)
        return figures, kinds, records


def _usage_hashes(rc):
    return [n for n in rc.scan_iter(match="toll:usage:{*}:*", count=1000)
            if check.USAGE_RE.match(n) and not n.endswith(":drained")]


def _free_claimed(rc):
    for name in rc.scan_iter(match="toll:free:{*}", count=1000):
        for svc, v in rc.hgetall(name).items():
            yield ("%s/%s" % (name, svc), v)


def replay_cmd(seed, minutes, faults):
    return "make sim SEED=%d MINUTES=%g SIM_FAULTS=%s" % (seed, minutes,
                                                          faults)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--faults", default="all",
                    help="classes on: all, none, a comma list, or "
                    "all,-class,...; known: %s"
                    % ", ".join(schedule.ALL_CLASSES))
    ap.add_argument("--build", default=os.path.join(
        os.path.dirname(os.path.dirname(HERE)), "build"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true",
                    help="keep the run's directory even when it passed")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    try:
        on = schedule.parse_classes(args.faults)
    except ValueError as e:
        ap.error(str(e))
    faults_spec = args.faults.replace(" ", "")
    log("seed %d, %g minutes, classes on: %s" % (
        seed, args.minutes, ", ".join(c for c in schedule.ALL_CLASSES
                                      if c in on) or "none"))
    log("replay with: %s" % replay_cmd(seed, args.minutes, faults_spec))
    off = [c for c in schedule.ALL_CLASSES if c not in on]
    if off:
        log("classes off: %s" % ", ".join(off))
    plan = schedule.plan(seed, args.minutes, on)
    log("schedule: %d calls in %d lanes, %d faults (%d skipped: off)" % (
        plan["calls"], len(plan["lanes"]), len(plan["faults"]),
        sum(1 for _, f in plan["faults"] if f.get("skipped"))))
    workdir = args.workdir or tempfile.mkdtemp(prefix="toll-sim-")
    os.makedirs(workdir, exist_ok=True)
    log("run directory %s" % workdir)

    run = Run(args, on)
    report = check.Report()
    run.cluster = Cluster(workdir, args.build)
    try:
        run.cluster.start()
        run.play(plan)
        log("played: %d requests (%d skipped past the deadline), "
            "%d faults; quiescing" % (len(run.outcomes), run.skipped,
                                      len(run.events)))
        run.quiesce(report)
        figures, kinds, records = run.verify(report)
        with open(os.path.join(workdir, "calls.jsonl"), "w") as f:
            for o in run.outcomes:
                f.write(json.dumps(o) + "\n")
        with open(os.path.join(workdir, "upstream.jsonl"), "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    except Exception:                   # noqa: BLE001 -- reported
        report.check("the simulation ran to its end", False,
                     traceback.format_exc())
        figures, kinds = {}, {}
    finally:
        run.cluster.close()

    print()
    if kinds:
        cols = ("calls", "no answer", "upstream", "not priced",
                "log amount off")
        log("%-15s" % "kind" + "".join(" %10s" % c[:10] for c in cols))
        for k, row in kinds.items():
            log("%-15s" % k + "".join(" %10d" % row[c] for c in cols))
    if figures:
        log("upstream received %d priced calls (%d of them open at a "
            "worker kill or answered at the read timeout, %d counted as "
            "at the gate); meter %d calls, %d micro-units; ledger %d "
            "calls, %d micro-units; free calls given %d; faults done %d"
            % (figures["upstream_received"], figures["uncertain"],
               figures["gate_outcomes"], figures["meter_calls"],
               figures["meter_amount"], figures["ledger_calls"],
               figures["ledger_amount"], figures["free_given"],
               len(run.events)))
    for n in report.notes:
        log("note: " + n)
    for name, _ in report.passed:
        log("ok    " + name)
    for name, detail in report.failed:
        log("FAIL  " + name)
        for line in detail.strip().splitlines()[:30]:
            log("      " + line)
    print("sim: %d passed, %d failed" % (len(report.passed),
                                         len(report.failed)))
    if report.failed:
        log("FAILED with seed %d; replay: %s" % (
            seed, replay_cmd(seed, args.minutes, faults_spec)))
        log("the run's files are in %s" % workdir)
        return 1
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
