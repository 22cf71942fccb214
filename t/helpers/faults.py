"""The error classes a real Redis sends, produced for real (issue 13).

    FAULTS       the names: noscript, oom, readonly, wrongtype, loading, lost
    Faults       begin(name, key=None) / end(): puts the test's redis-server
                 into that state and out of it again
    fault_lines  the lines of a log that name a fault at a level that counts
                 (error and above; the repeats nginx logs at info do not)

How each is made:
    noscript   SCRIPT FLUSH: the next EVALSHA is answered NOSCRIPT
    oom        maxmemory 1 byte, noeviction: every command that may grow
               memory is answered OOM
    readonly   REPLICAOF a second redis-server, to which the data was copied
               first (a replica drops its own data when it syncs)
    wrongtype  a string at the name a path reads or writes
    loading    SAVE, SIGKILL, and a restart that reads the RDB slowly
               (key-load-delay): meanwhile every command is answered LOADING
    lost       SIGKILL and a restart with nothing: the data is gone
"""

import os
import re
import subprocess
import time

import redis as redis_py

from helpers.procs import REDIS_BIN, RedisServer, wait_for


FAULTS = ("noscript", "oom", "readonly", "wrongtype", "loading", "lost")

# the token of each class in Redis's answers and in our log lines
TOKEN = {"noscript": "NOSCRIPT", "oom": "OOM", "readonly": "READONLY",
         "wrongtype": "WRONGTYPE", "loading": "LOADING", "lost": None}

# keys written before a restart that loads slowly: ~2 s of LOADING
LOADING_KEYS = 4000
LOADING_DELAY_US = 500

_COUNTED = re.compile(r"\[(error|warn|crit|alert|emerg)\]")


def fault_lines(text, fault, path_re=None):
    """Lines of an nginx error log (or a program's stderr, where every
    line counts) that name the fault.  A restart that loads is also an
    outage first: the line that says the store is unavailable names it.
    With path_re, only the lines of that path (and the outage's) count."""
    tok = TOKEN[fault]
    out = []
    for line in text.splitlines():
        if tok is None or not (tok in line or (
                fault == "loading" and "unavailable" in line)):
            continue
        if path_re and not re.search(path_re, line) and not (
                fault == "loading" and "unavailable" in line):
            continue
        if line.startswith("toll-settle:") or line.startswith("tollctl:") \
                or _COUNTED.search(line):
            out.append(line)
    return out


class Faults:
    """Faults of one test's RedisServer."""

    def __init__(self, rs, workdir):
        self.rs = rs
        self.workdir = str(workdir)
        self.primary = None
        self.current = None
        self.key = None

    # ------------------------------------------------------------ begin

    def begin(self, fault, key=None):
        self.current, self.key = fault, key
        getattr(self, "_begin_" + fault)()

    def end(self):
        fault, self.current = self.current, None
        if fault:
            getattr(self, "_end_" + fault)()

    def close(self):
        if self.primary is not None:
            self.primary.close()
            self.primary = None

    def _begin_noscript(self):
        self.rs.client.script_flush()

    def _end_noscript(self):
        pass

    def _begin_oom(self):
        c = self.rs.client
        c.config_set("maxmemory-policy", "noeviction")
        c.config_set("maxmemory", "1")

    def _end_oom(self):
        self.rs.client.config_set("maxmemory", "0")

    def _begin_readonly(self):
        if self.primary is None:
            self.primary = RedisServer(os.path.join(self.workdir, "primary"))
        src, dst = self.rs.client, self.primary.client
        dst.flushall()
        raw = redis_py.Redis(host=self.rs.host, port=self.rs.port,
                             socket_timeout=10)
        for name in raw.scan_iter(count=1000):
            ttl = raw.pttl(name)
            dst.execute_command("RESTORE", name, max(ttl, 0),
                                raw.dump(name), "REPLACE")
        raw.close()
        src.execute_command("REPLICAOF", self.primary.host,
                            self.primary.port)
        wait_for(lambda: src.info("replication").get(
            "master_link_status") == "up"
            and src.info("persistence").get("loading") == 0, 10,
            interval=0.02, what="the replica to sync")

    def _end_readonly(self):
        self.rs.client.execute_command("REPLICAOF", "NO", "ONE")

    def _begin_wrongtype(self):
        assert self.key, "wrongtype needs the name of a key"
        p = self.rs.client.pipeline(transaction=True)
        p.delete(self.key)
        p.set(self.key, "not what toll wrote here")
        p.execute()

    def _end_wrongtype(self):
        self.rs.client.delete(self.key)

    def _begin_loading(self):
        c = self.rs.client
        p = c.pipeline(transaction=False)
        for i in range(LOADING_KEYS):
            p.set("fault:filler:%d" % i, "x" * 64)
        p.execute()
        c.execute_command("SAVE")
        self.rs.kill()
        self._start_slow()

    def _end_loading(self):
        wait_for(self._loaded, 30, interval=0.05, what="redis to load")
        c = self.rs.client
        p = c.pipeline(transaction=False)
        for i in range(LOADING_KEYS):
            p.delete("fault:filler:%d" % i)
        p.execute()

    def _begin_lost(self):
        self.rs.restart()

    def _end_lost(self):
        pass

    # ------------------------------------------------------------ loading

    def _start_slow(self):
        rs = self.rs
        rs.log = os.path.join(rs.dir, "redis-%d.log" % time.time_ns())
        rs.proc = subprocess.Popen(
            [REDIS_BIN, "--port", str(rs.port), "--bind", rs.host,
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--dir", rs.dir, "--logfile", rs.log,
             "--key-load-delay", str(LOADING_DELAY_US),
             "--loading-process-events-interval-bytes", "1024"],
            cwd=rs.dir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        rs.frozen = False

        def answers_loading():
            try:
                rs.client.ping()
            except redis_py.exceptions.BusyLoadingError:
                return True
            except redis_py.exceptions.ConnectionError:
                return False
            raise AssertionError("redis answered before it had loaded")

        wait_for(answers_loading, 10, interval=0.005,
                 what="redis to answer LOADING")

    def _loaded(self):
        try:
            self.rs.client.ping()
            return True
        except redis_py.exceptions.BusyLoadingError:
            return False

    def errors_seen(self, fault):
        """How many commands redis refused with the fault's class
        (INFO errorstats), so that a test can wait for retries."""
        tok = TOKEN[fault]
        try:
            st = self.rs.client.info("errorstats")
        except redis_py.exceptions.BusyLoadingError:
            return 0
        v = st.get("errorstat_" + tok, {})
        if isinstance(v, dict):
            return int(v.get("count", 0))
        # redis-py 4 leaves "count=N" as it came
        m = re.match(r"count=(\d+)", str(v))
        return int(m.group(1)) if m else 0
