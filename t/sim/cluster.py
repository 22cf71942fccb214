"""The real parts of the simulation, started and ended.

    Redis        one redis-server with an append-only file fsynced at
                 every write, so that a SIGKILL and a restart lose nothing
                 acknowledged (a Redis that forgets what it confirmed is
                 outside every promise toll makes)
    SimUpstream  the counting upstream (upstream.py)
    2 x nginx    2 workers each, the module loaded by absolute path, the
                 same locations, each with an HTTP/1.1 and an h2c port
    toll-settle  the daemon, SIGKILLed and restarted by the faults
    keys         one per buyer, made with tollctl

Every port is on 127.0.0.1; everything lives under the run's directory.
"""

import os
import re
import subprocess
import time
import urllib.request

from helpers import conf as confmod
from helpers.keys import make_key
from helpers.procs import (REDIS_BIN, Nginx, RedisServer, free_port,
                           nginx_env, wait_for)
from helpers.settle import Settle

from upstream import SimUpstream

MICROS = 1000000

# service -> (provider, price in micro-units, free_calls, charge_errors)
SERVICES = {
    "api": ("acme", 50000, 0, False),
    "free": ("acme", 13000, 20, False),
    "data": ("globex", 123, 0, False),
    "err": ("initech", 20000, 0, True),
    "tf": ("umbrella", 11000, 0, False),
    "nm": ("umbrella", 12000, 0, False),
    "ep": ("umbrella", 13000, 0, False),
    "ix": ("umbrella", 14000, 0, False),
    "xa": ("umbrella", 15000, 0, False),
    "rw": ("umbrella", 16000, 0, False),
    "pp": ("acme", 30000, 0, False),
}

# toll_route of "data": (method, regex on $uri, price in micro-units)
ROUTES = {"data": [("POST", re.compile(r"^/data/bulk$"), 500000)]}

FREE_LEASE = 5
PROXY_READ_TIMEOUT_S = 2.0
CLIENT_BODY_TIMEOUT_S = 1.0
REDIS_TIMEOUT = "500ms"
METER_FLUSH = "200ms"
SETTLE_INTERVAL = "200ms"
BUYERS = ["sim-b%d" % i for i in range(5)]
# prepaid balances credited at the start (micro-units, USD): /pp/ is
# toll_prepaid on, so some buyers run out during a run and one never had
# any
BALANCES = {"sim-b0": 300000, "sim-b1": 1000000, "sim-b2": 3000000,
            "sim-b4": 30000000}


def decimal_of(micros):
    return "%d.%06d" % divmod(micros, MICROS)


def price_of(service, method, path):
    """The price the documented rules give a call: the first matching
    toll_route, else the service's."""
    for m, rx, p in ROUTES.get(service, ()):
        if (m == "*" or m == method) and rx.search(path):
            return p
    return SERVICES[service][1]


def _proxy(service):
    return ('proxy_pass http://backend; proxy_http_version 1.1; '
            'proxy_set_header Connection ""; '
            'proxy_set_header X-Sim-Service %s;' % service)


def _service(name):
    provider, price, free, charge = SERVICES[name]
    s = "toll_service %s provider=%s price=%s" % (name, provider,
                                                 decimal_of(price))
    if free:
        s += " free_calls=%d" % free
    s += ";"
    for m, rx, p in ROUTES.get(name, ()):
        s += " toll_route %s %s price=%s;" % (m, rx.pattern, decimal_of(p))
    if charge:
        s += " toll_charge_errors on;"
    return s


def locations():
    """Every location of the simulation.  The front locations of the
    internal-redirect kinds are gated (toll on) and sell nothing; the
    location each one ends in sells a service of its own, so the meter
    shows whether the call was priced where it was sent upstream."""
    svc = {n: _service(n) for n in SERVICES}
    px = {n: _proxy(n) for n in SERVICES}
    px["-"] = _proxy("-")
    return """
        location /api/  {{ toll on; {svc[api]} {px[api]} }}
        location /pp/   {{ toll on; toll_prepaid on; {svc[pp]} {px[pp]} }}
        location /free/ {{ toll on; {svc[free]} {px[free]} }}
        location /data/ {{ toll on; {svc[data]} {px[data]} }}
        location /err/  {{ toll on; {svc[err]} {px[err]} }}

        # try_files to a URI
        location /tf/   {{ toll on; try_files /sim-nothing /tfx$uri?$args; }}
        location /tfx/  {{ internal; toll on; {svc[tf]} {px[tf]} }}

        # try_files to a named location
        location /nm/   {{ toll on; try_files /sim-nothing @nm; }}
        location @nm    {{ toll on; {svc[nm]} {px[nm]} }}

        # error_page after the content handler's 404
        location /ep/   {{ toll on; log_not_found off;
                          error_page 404 = /epx$uri?$args; }}
        location /epx/  {{ internal; toll on; {svc[ep]} {px[ep]} }}

        # index (html/ix/sim.idx exists)
        location /ix/   {{ toll on; index sim.idx; }}
        location ~ ^/ix/.*\\.idx$ {{ toll on; {svc[ix]} {px[ix]} }}

        # X-Accel-Redirect from the upstream
        location /xa/   {{ toll on; {px[-]} }}
        location /xai/  {{ internal; toll on; {svc[xa]} {px[xa]} }}

        # rewrite ... last (runs before the gate)
        location /rw/   {{ rewrite ^/rw/(.*)$ /rwx/$1 last; }}
        location /rwx/  {{ toll on; {svc[rw]} {px[rw]} }}

        location = /sim/metrics {{ toll_metrics; }}
""".format(svc=svc, px=px)


SIM_LOG_FORMAT = ("sim=$arg_sim|status=$status|buyer=$toll_buyer"
                  "|service=$toll_service|amount=$toll_amount"
                  "|free=$toll_free_tier|ups=$upstream_status|uri=$uri"
                  "|pid=$pid")


def http_extra():
    return ("    toll_meter_flush %s;\n"
            "    toll_free_lease %d;\n"
            "    client_body_timeout %dms;\n"
            "    proxy_read_timeout %dms;\n"
            "    log_format simlog '%s';\n"
            "    access_log logs/sim.log simlog;\n"
            % (METER_FLUSH, FREE_LEASE, CLIENT_BODY_TIMEOUT_S * 1000,
               PROXY_READ_TIMEOUT_S * 1000, SIM_LOG_FORMAT))


class DurableRedis(RedisServer):
    """RedisServer with an append-only file fsynced at every write: a
    SIGKILL loses nothing it acknowledged, and start() on the same
    directory loads it back."""

    def start(self):
        self.log = os.path.join(self.dir, "redis-%d.log" % time.time_ns())
        self.proc = subprocess.Popen(
            [REDIS_BIN, "--port", str(self.port), "--bind", self.host,
             "--save", "", "--appendonly", "yes", "--appendfsync",
             "always", "--daemonize", "no", "--dir", self.dir,
             "--logfile", self.log],
            cwd=self.dir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.frozen = False
        self.paused_until = 0.0

        def ping():
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s; log:\n%s"
                                   % (self.proc.returncode,
                                      self._log_tail()))
            try:
                return self.client.ping()
            except Exception:       # noqa: BLE001 -- loading, refused
                return False

        wait_for(ping, 20, what="redis-server PING on %d" % self.port)

    @property
    def up(self):
        return self.proc is not None


class Instance:
    """One nginx of the simulation: its HTTP/1.1 port and h2c port."""

    def __init__(self, name, workdir, module, redis, upstream):
        self.name = name
        self.prefix = os.path.join(workdir, name)
        confmod.make_prefix(self.prefix)
        os.makedirs(os.path.join(self.prefix, "html", "ix"), exist_ok=True)
        with open(os.path.join(self.prefix, "html", "ix", "sim.idx"),
                  "w") as f:
            f.write("index\n")
        self.port = free_port()
        self.h2_port = free_port()
        toll_http = ("    toll_redis %s timeout=%s;\n    toll_zone 16m;"
                     % (redis.address, REDIS_TIMEOUT))
        text = confmod.render(
            self.prefix, self.port, upstream.port, module, workers=2,
            toll_http=toll_http, http_extra=http_extra(),
            server_extra="        listen 127.0.0.1:%d http2;"
            % self.h2_port,
            locations=locations())
        env = nginx_env(os.environ.get("TOLL_PRELOAD", "").strip())
        self.ngx = Nginx(self.prefix, text, self.port, env, 2)
        # a kill of one of its workers, by (monotonic start, end)
        self.kills = []

    def start(self):
        self.ngx.start()
        return self

    def meter_backlog(self):
        url = "http://127.0.0.1:%d/sim/metrics" % self.port
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        m = re.search(r"^toll_meter_backlog (\d+)", text, re.M)
        return int(m.group(1)) if m else None

    def sim_log(self):
        out = []
        path = os.path.join(self.prefix, "logs", "sim.log")
        try:
            with open(path) as f:
                for line in f:
                    rec = dict(p.partition("=")[::2]
                               for p in line.rstrip("\n").split("|"))
                    rec["instance"] = self.name
                    out.append(rec)
        except FileNotFoundError:
            pass
        return out


class Cluster:
    def __init__(self, workdir, build):
        self.workdir = workdir
        self.build = os.path.abspath(build)
        os.environ["TOLL_BUILD"] = self.build
        self.module = os.path.join(self.build, "ngx_http_toll_module.so")
        for f in (self.module, os.path.join(self.build, "tollctl"),
                  os.path.join(self.build, "toll-settle")):
            if not os.path.exists(f):
                raise SystemExit("sim: %s is not built (make all)" % f)
        self.redis = None
        self.upstream = None
        self.instances = []
        self.settle = None
        self.daemon = None
        self.keys = {}

    def start(self):
        self.redis = DurableRedis(os.path.join(self.workdir, "redis"))
        self.upstream = SimUpstream()
        for b in BUYERS:
            self.keys[b] = make_key(self.redis, owner=b)
        for b, micros in sorted(BALANCES.items()):
            p = subprocess.run(
                [os.path.join(self.build, "tollctl"), "--redis",
                 self.redis.address, "balance", "credit", b,
                 decimal_of(micros), "--ref", "sim-" + b],
                capture_output=True, text=True, timeout=60)
            if p.returncode != 0:
                raise SystemExit("sim: tollctl balance credit: %s"
                                 % p.stderr)
        for name in ("nginx-a", "nginx-b"):
            inst = Instance(name, self.workdir, self.module, self.redis,
                            self.upstream)
            self.instances.append(inst.start())
        self.settle = Settle(self.redis,
                             os.path.join(self.workdir, "ledger.db"),
                             conf_lines=["redis_timeout 1s"],
                             workdir=self.workdir)
        self.start_daemon()
        return self

    def start_daemon(self):
        self.daemon = self.settle.start(interval=SETTLE_INTERVAL)
        self.daemon.killed_by_us = False
        return self.daemon

    def close(self):
        for inst in self.instances:
            try:
                inst.ngx.stop()
            except Exception:       # noqa: BLE001 -- best effort at exit
                pass
        if self.settle is not None:
            self.settle.close()
        if self.upstream is not None:
            self.upstream.close()
        if self.redis is not None:
            self.redis.close()
