#!/usr/bin/python3
"""Redis commands per gate, by feature: the figures of docs/deployment.md.

Starts a redis-server, an upstream nginx and a gateway nginx with the
module (W workers), then, one scenario at a time, sends calls at a fixed
rate with wrk to a location that turns on one feature, and reads the
difference of Redis's INFO commandstats over a window, per command.  The
INFO calls this script makes are left out.  Then toll-settle: commands per
drain pass when idle and while the gateway meters.

    /usr/bin/python3 benchmarks/redis_commands.py [--build build]
        [--workers 2] [--window 10] [--rate 500] [--rates 500,2000] [--keep]

Everything on 127.0.0.1, on free ports, in a temporary directory removed
on exit (--keep leaves it).  Needs nginx, redis-server, wrk and what make
builds (build/ngx_http_toll_module.so, build/tollctl, build/toll-settle).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import redis as redis_py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "t"))

from helpers import conf as confmod                     # noqa: E402
from helpers.procs import (PROXY, Nginx, RedisServer,  # noqa: E402
                           free_port, nginx_env, wait_for)
from helpers.settle import write_usage                  # noqa: E402

PLAN = "toll_plan bench rate=100000000r/m burst=1000000 rate=1000000000r/d;"
FREE_CALLS = 1000000000
CREDIT = "1000000"          # a balance no run can spend
CAP = "1000000"             # a daily cap no run can reach

# location -> (gate lines, what the row measures)
LOCATIONS = [
    ("auth", "toll_limit off;",
     "API-key auth, warm cache (toll_limit off, no service)"),
    ("limits", "",
     "limits: plan bench (bucket + day window), synced every 100 ms"),
    ("meter", "toll_limit off; toll_service s-meter provider=p price=0.001;",
     "meter flush: one buyer, one service, priced"),
    ("units", "toll_limit off; toll_service s-units provider=p price=0.001"
     " unit_price=0.000001 max_units=100000 units_header=X-Units;",
     "units: the same, priced per unit of the upstream's header"),
    ("free", "toll_limit off; toll_service s-free provider=p price=0.001"
     " free_calls=%d;" % FREE_CALLS,
     "free tier: every call free (leases of toll_free_lease 10)"),
    ("prepaid", "toll_limit off; toll_prepaid on;"
     " toll_service s-prepaid provider=p price=0.001;",
     "prepaid: every call held from the node's lease of a balance"),
    ("caps", "toll_limit off; toll_service s-caps provider=p price=0.001;",
     "spend caps: a buyer with a daily cap"),
    ("whole", "toll_prepaid on; toll_service s-whole provider=p price=0.001;",
     "whole gate: auth, limits, meter, prepaid (no cap on the buyer)"),
]
# these rows are measured again with MANY keys of as many buyers, the calls
# spread over them: what scales with subjects, not with calls
MANY = 10
MANY_ROWS = ("limits", "meter", "whole")


def sh(*cmd, check=True):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr))
    return r.stdout


class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.build = os.path.abspath(args.build)
        self.tollctl = os.path.join(self.build, "tollctl")
        self.redis = RedisServer(os.path.join(tmp, "redis"))
        self.keys = {}

    # -- setup

    def ctl(self, *args):
        return sh(self.tollctl, "--redis", self.redis.address, "--json",
                  *args)

    def make_keys(self):
        for name, _, _ in LOCATIONS:
            n = MANY if name in MANY_ROWS else 1
            self.keys[name] = []
            for i in range(n):
                owner = "buyer-%s-%d" % (name, i)
                doc = json.loads(self.ctl("key", "create", "--owner", owner,
                                          "--plan", "bench"))
                self.keys[name].append(doc["token"])
                if name in ("prepaid", "whole"):
                    self.ctl("balance", "credit", owner, CREDIT,
                             "--currency", "USD", "--ref", "bench-" + owner)

    def start_upstream(self):
        prefix = os.path.join(self.tmp, "upstream")
        confmod.make_prefix(prefix)
        self.up_port = free_port()
        text = confmod.render(
            prefix, self.up_port, self.up_port, workers=1,
            error_log_level="notice",
            server_extra="        access_log off;",
            locations=("        location /units/ { add_header X-Units 42"
                       " always; return 200 \"ok\"; }\n"
                       "        location / { return 200 \"ok\"; }"))
        self.upstream = Nginx(prefix, text, self.up_port, nginx_env(None),
                              1).start()

    def start_gateway(self):
        prefix = os.path.join(self.tmp, "gateway")
        confmod.make_prefix(prefix)
        module = os.path.join(prefix, "ngx_http_toll_module.so")
        # a private copy: a rebuild during the run cannot pull it away
        shutil.copy(os.path.join(self.build, "ngx_http_toll_module.so"),
                    module)
        self.port = free_port()
        locs = []
        for name, gate, _ in LOCATIONS:
            locs.append("        location /%s/ { toll on; %s %s }"
                        % (name, gate, PROXY))
        toll_http = ("    toll_redis %s timeout=1s;\n    toll_zone 32m;\n"
                     "    %s\n    toll_jwt_jwks corp;\n"
                     % (self.redis.address, PLAN))
        text = confmod.render(
            prefix, self.port, self.up_port, module_path=module,
            workers=self.args.workers, error_log_level="notice",
            toll_http=toll_http,
            server_extra="        access_log off;",
            locations="\n".join(locs))
        self.gateway = Nginx(prefix, text, self.port, nginx_env(None),
                             self.args.workers).start()

    # -- measuring

    def stats(self):
        return self.redis.commandstats()

    def redis_cpu(self):
        """redis-server's CPU seconds so far (utime + stime)."""
        with open("/proc/%d/stat" % self.redis.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf(
            "SC_CLK_TCK")

    def delta(self, a, b):
        d = {}
        for k, v in b.items():
            n = v - a.get(k, 0)
            if k in ("info",):
                continue
            if n:
                d[k] = n
        return d

    def wrk_script(self, rate, conns, tokens):
        path = os.path.join(self.tmp, "rate-%d-%d.lua" % (rate, len(tokens)))
        # each connection waits conns/rate between its calls; the calls
        # take the keys in turn
        with open(path, "w") as f:
            f.write("local t = {%s}\nlocal i = 0\n"
                    "function request()\n  i = i %% #t + 1\n"
                    "  return wrk.format(nil, nil, {[\"Authorization\"]"
                    " = \"Bearer \" .. t[i]})\nend\n"
                    "function delay()\n  return %d\nend\n"
                    % (", ".join('"%s"' % k for k in tokens),
                       max(1, round(conns * 1000 / rate))))
        return path

    def wrk(self, name, secs, rate, many=False):
        conns = max(4, min(64, rate // 50))
        tokens = self.keys[name] if many else self.keys[name][:1]
        cmd = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % secs,
               "-s", self.wrk_script(rate, conns, tokens),
               "http://127.0.0.1:%d/%s/" % (self.port, name)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    @staticmethod
    def wrk_requests(out):
        if "Non-2xx" in out:
            raise RuntimeError("wrk saw non-2xx answers:\n" + out)
        for line in out.splitlines():
            if " requests in " in line:
                return int(line.split()[0])
        raise RuntimeError("cannot read wrk's output:\n" + out)

    def check(self, name):
        req = urllib.request.Request(
            "http://127.0.0.1:%d/%s/" % (self.port, name),
            headers={"Authorization": "Bearer " + self.keys[name][0]})
        with urllib.request.urlopen(req, timeout=5) as r:
            if r.status != 200:
                raise RuntimeError("/%s/ answered %d" % (name, r.status))

    def monitor_start(self):
        self.mon_path = os.path.join(self.tmp, "monitor.txt")
        out = open(self.mon_path, "w")
        self.mon = subprocess.Popen(
            ["redis-cli", "-h", self.redis.host, "-p", str(self.redis.port),
             "monitor"], stdout=out, stderr=subprocess.DEVNULL)
        out.close()
        wait_for(lambda: os.path.getsize(self.mon_path) > 0, 5,
                 what="redis-cli monitor")

    def monitor_stop(self, t0, t1):
        """{command: count} of the commands clients sent between the
        unix times t0 and t1 (MONITOR's lines; a script's own commands,
        marked "lua", and this script's INFO left out)."""
        self.mon.terminate()
        self.mon.wait(10)
        sent = {}
        with open(self.mon_path, errors="replace") as f:
            for line in f:
                parts = line.split(" ", 3)
                if len(parts) < 4 or not parts[0][:1].isdigit():
                    continue
                t = float(parts[0])
                if t < t0 or t > t1 or parts[2].startswith("lua]"):
                    continue
                cmd = parts[3].split(" ", 1)[0].strip().strip('"').lower()
                if cmd in ("info", "monitor"):
                    continue
                sent[cmd] = sent.get(cmd, 0) + 1
        return sent

    def measure(self, name, rate, many=False):
        """(calls in the window, seconds, {command: executed},
        {command: sent}) with calls at `rate`/s to /name/ (none for rate
        0).  Executed counts include the commands scripts run."""
        win = self.args.window
        if rate:
            self.check(name)
            # warm: leases grown, the key cached, the flush in its rhythm
            warm = self.wrk(name, self.args.warm, rate, many)
            warm.communicate()
            run = self.wrk(name, win, rate, many)
        self.monitor_start()
        a, c0 = self.stats(), self.redis_cpu()
        t0, m0 = time.time(), time.monotonic()
        if rate:
            out, _ = run.communicate()
        else:
            time.sleep(win)
        b, c1 = self.stats(), self.redis_cpu()
        t1, secs = time.time(), time.monotonic() - m0
        sent = self.monitor_stop(t0, t1)
        calls = self.wrk_requests(out) if rate else 0
        # MONITOR itself costs Redis CPU: an upper bound
        self.cpu = (c1 - c0) / secs
        return calls, secs, self.delta(a, b), sent

    # -- toll-settle

    def settle_metrics(self, port):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                    timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("toll_settle_passes_total"):
                    return int(float(line.split()[-1]))
        return 0

    def settle(self, label, buyers):
        """Commands per pass of a toll-settle daemon (--interval 1s), the
        gateway stopped; with `buyers`, each second a usage hash of each
        written as the meter writes it (its commands taken out again)."""
        mport = free_port()
        # one ledger: a Redis is bound to one (toll:settle:ledger)
        ledger = os.path.join(self.tmp, "ledger.db")
        p = subprocess.Popen(
            [os.path.join(self.build, "toll-settle"), "--redis",
             self.redis.address, "--ledger", ledger, "--interval", "1s",
             "--metrics-listen", "127.0.0.1:%d" % mport],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        rc = redis_py.Redis(host=self.redis.host, port=self.redis.port,
                            decode_responses=True)
        mine = {}
        try:
            wait_for(lambda: self._passes(mport) >= 2, 20,
                     what="toll-settle's first passes")
            self.monitor_start()
            n0, a = self._passes(mport), self.stats()
            t0 = time.time()
            end = time.monotonic() + self.args.window
            while time.monotonic() < end:
                t = time.monotonic()
                for i in range(buyers):
                    write_usage(rc, "settle-%d" % i, "s", "p")
                    # MULTI, 6 HINCRBY, HSET, SADD days, EXEC, SADD index
                    for k, n in (("multi", 1), ("hincrby", 6), ("hset", 1),
                                 ("sadd", 2), ("exec", 1)):
                        mine[k] = mine.get(k, 0) + n
                time.sleep(max(0, 1 - (time.monotonic() - t)))
            n1, b = self._passes(mport), self.stats()
            sent = self.monitor_stop(t0, time.time())
        finally:
            p.terminate()
            p.wait(10)
            rc.close()
        d = self.delta(a, b)
        # the feeder's commands are all sent, none in a script
        for counts in (d, sent):
            for k, n in mine.items():
                counts[k] = counts.get(k, 0) - n
                if counts[k] == 0:
                    del counts[k]
        return n1 - n0, d, sent

    def _passes(self, port):
        try:
            return self.settle_metrics(port)
        except OSError:
            return 0


def fmt_cmds(d, secs, calls=0):
    parts = []
    for k, v in sorted(d.items(), key=lambda kv: -kv[1]):
        parts.append("%s %.2f" % (k.upper(), v / secs))
    return ", ".join(parts) or "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(os.path.dirname(HERE),
                                                    "build"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--rate", type=int, default=500,
                    help="calls/s for the per-feature rows")
    ap.add_argument("--rates", default="500,2000",
                    help="calls/s for the whole gate's rows")
    ap.add_argument("--settle-buyers", type=int, default=10,
                    help="usage hashes written a second for toll-settle")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="toll-redis-cmds-")
    b = None
    try:
        b = Bench(args, tmp)
        b.make_keys()
        b.start_upstream()
        b.start_gateway()
        time.sleep(2)

        print("toll redis_commands: nginx workers=%d, window %ds, wrk at a"
              " fixed rate (warm-up %ds), INFO commandstats deltas"
              % (args.workers, args.window, args.warm))
        print("sent: commands the gate sent (MONITOR), executed: the same"
              " and the commands its scripts ran (INFO commandstats)")
        print("redis%: redis-server's CPU over the window (MONITOR"
              " running: an upper bound)")
        print("%-11s %7s %8s %8s %9s %9s %6s  %s" % (
            "feature", "calls/s", "sent/s", "exec/s", "sent/1k", "exec/1k",
            "redis%", "sent per second, by command"))

        def row(label, name, rate, many=False):
            calls, secs, d, sent = b.measure(name, rate, many)
            ex, se = sum(d.values()), sum(sent.values())
            if calls:
                per = "%9.1f %9.1f" % (se * 1000.0 / calls,
                                       ex * 1000.0 / calls)
            else:
                per = "%9s %9s" % ("-", "-")
            print("%-11s %7.0f %8.2f %8.2f %s %6.1f  %s" % (
                label, calls / secs, se / secs, ex / secs, per,
                b.cpu * 100, fmt_cmds(sent, secs)))
            sys.stdout.flush()

        row("idle", None, 0)
        for name, _, _ in LOCATIONS:
            if name in ("caps", "whole"):
                continue
            row(name, name, args.rate)
            if name in MANY_ROWS:
                row("%s x%d" % (name, MANY), name, args.rate, True)
        # the cap: from now on every node reads caps (toll:cap:gen > 0)
        b.ctl("buyer", "set-cap", "buyer-caps", "--currency", "USD",
              "--daily", CAP)
        time.sleep(1)
        row("idle+cap", None, 0)
        for r in [int(x) for x in args.rates.split(",")]:
            row("caps", "caps", r)
        for r in [int(x) for x in args.rates.split(",")]:
            row("whole", "whole", r)
            row("whole x%d" % MANY, "whole", r, True)

        for bad in b.gateway.bad_lines():
            print("gateway log: " + bad)
        b.gateway.stop()

        print()
        print("toll-settle, --interval 1s, commands per pass (gateway"
              " stopped; draining: %d usage hashes a second):"
              % args.settle_buyers)
        for label, buyers in (("idle", 0), ("draining",
                                             args.settle_buyers)):
            passes, d, sent = b.settle(label, buyers)
            n = max(passes, 1)
            print("%-8s passes %d, sent %.1f/pass, executed %.1f/pass;"
                  " sent per pass: %s" % (
                      label, passes, sum(sent.values()) / n,
                      sum(d.values()) / n,
                      ", ".join("%s %.1f" % (k.upper(), v / n) for k, v in
                                sorted(sent.items(),
                                       key=lambda kv: -kv[1]))))
    finally:
        if b is not None:
            for p in ("gateway", "upstream"):
                if hasattr(b, p):
                    getattr(b, p).stop()
            b.redis.close()
        if args.keep:
            print("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
