"""redis-server and nginx, started and watched by the tests.

Everything listens on 127.0.0.1 on ports the kernel picked, and lives in
the test's own directory.  Nothing here sleeps to decide a result: every
wait is a poll on a condition with a deadline.
"""

import os
import re
import signal
import socket
import subprocess
import time

import redis as redis_py


NGINX_BIN = "/usr/sbin/nginx"
REDIS_BIN = "/usr/bin/redis-server"

# lines that fail a test unless it declares them expected
BAD_LOG_RE = re.compile(r"\[(alert|crit|emerg)\]|Sanitizer|runtime error:"
                        r"|exited on signal")

PROXY = ('proxy_pass http://backend; proxy_http_version 1.1; '
         'proxy_set_header Connection "";')


def free_port():
    """A port nothing listens on right now (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, interval=0.01, what="condition"):
    """Polls pred() until it returns a true value; returns that value.
    Raises TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s"
                               % (timeout, what))
        time.sleep(interval)


def port_answers(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def children(ppid):
    """[(pid, cmdline)] of the live children of ppid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) != ppid or fields[0] == "Z":
                continue
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("latin-1").strip()
        except (FileNotFoundError, ProcessLookupError, IndexError,
                ValueError):
            continue
        out.append((int(d), cmd))
    return out


# --------------------------------------------------------------- redis


class RedisServer:
    """One redis-server on a free loopback port, no persistence."""

    def __init__(self, workdir):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.proc = None
        self.frozen = False
        self.client = redis_py.Redis(host=self.host, port=self.port,
                                     decode_responses=True,
                                     socket_timeout=10)
        self.start()

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        self.log = os.path.join(self.dir, "redis-%d.log" % time.time_ns())
        self.proc = subprocess.Popen(
            [REDIS_BIN, "--port", str(self.port), "--bind", self.host,
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--dir", self.dir, "--logfile", self.log],
            cwd=self.dir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.frozen = False

        def ping():
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s; log:\n%s"
                                   % (self.proc.returncode,
                                      self._log_tail()))
            try:
                return self.client.ping()
            except redis_py.exceptions.ConnectionError:
                return False

        wait_for(ping, 10, what="redis-server PING on %d" % self.port)

    def _log_tail(self):
        try:
            with open(self.log) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def kill(self):
        """SIGKILL: the connection drops, nothing is saved."""
        if self.proc is None:
            return
        if self.frozen:
            self.thaw()
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None
        self.client.connection_pool.disconnect()

    def restart(self):
        """A fresh, empty server on the same port."""
        self.kill()
        self.start()

    def restart_saved(self):
        """SHUTDOWN SAVE, then the same data on the same port: connections
        drop, what was written stays (as with persistence on)."""
        if self.frozen:
            self.thaw()
        try:
            self.client.shutdown(save=True)
        except redis_py.exceptions.ConnectionError:
            pass
        self.proc.wait(10)
        self.proc = None
        self.client.connection_pool.disconnect()
        self.start()

    def freeze(self):
        """SIGSTOP: the socket stays open, nothing is answered."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        if self.proc is not None and self.frozen:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    def info(self, section):
        return self.client.info(section)

    def lookups(self):
        """Key reads so far: keyspace hits + misses.  Writes (HSET, SADD)
        and INFO do not count, so the delta over a request is the number
        of key records the gate read from Redis."""
        s = self.client.info("stats")
        return int(s["keyspace_hits"]) + int(s["keyspace_misses"])

    def commandstats(self):
        """{command: calls} from INFO commandstats."""
        out = {}
        for k, v in self.client.info("commandstats").items():
            name = k[len("cmdstat_"):] if k.startswith("cmdstat_") else k
            out[name] = int(v["calls"]) if isinstance(v, dict) else v
        return out

    def close(self):
        try:
            self.thaw()
            self.kill()
        finally:
            self.client.close()


# --------------------------------------------------------------- nginx


class Nginx:
    """One nginx master (daemon off) with its own prefix and config."""

    def __init__(self, prefix, conf_text, port, env, workers):
        self.prefix = str(prefix)
        self.port = port
        self.env = env
        self.workers = workers
        self.conf_path = os.path.join(self.prefix, "conf", "nginx.conf")
        self.error_log = os.path.join(self.prefix, "logs", "error.log")
        self.access_log = os.path.join(self.prefix, "logs", "access.log")
        self.toll_log = os.path.join(self.prefix, "logs", "toll.log")
        self.out_log = os.path.join(self.prefix, "logs", "nginx.out")
        self.proc = None
        self.known_workers = set()
        self.write_conf(conf_text)

    # -- files

    def write_conf(self, conf_text):
        self.conf_text = conf_text
        with open(self.conf_path, "w") as f:
            f.write(conf_text)

    def read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def error_log_text(self):
        return self.read(self.error_log)

    def logs_text(self):
        """Everything nginx wrote: error log, access logs, stdout/stderr."""
        parts = []
        logs = os.path.join(self.prefix, "logs")
        for name in sorted(os.listdir(logs)):
            p = os.path.join(logs, name)
            if os.path.isfile(p):
                parts.append(self.read(p))
        return "\n".join(parts)

    def cmd(self, *args):
        return [NGINX_BIN, "-p", self.prefix + "/", "-c", self.conf_path,
                "-e", self.error_log] + list(args)

    # -- processes

    def start(self, timeout=15):
        out = open(self.out_log, "ab")
        self.proc = subprocess.Popen(self.cmd(), env=self.env,
                                     stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT,
                                     cwd=self.prefix)
        out.close()

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "nginx exited with %s at start; error log:\n%s\n%s"
                    % (self.proc.returncode, self.error_log_text()[-3000:],
                       self.read(self.out_log)[-2000:]))
            return (len(self.worker_pids()) == self.workers
                    and port_answers(self.port))

        wait_for(up, timeout, what="nginx to listen on %d" % self.port)
        self.known_workers |= self.worker_pids()
        return self

    @property
    def master_pid(self):
        return self.proc.pid if self.proc else None

    def worker_pids(self, include_exiting=False):
        """Worker pids of the current generation (title exactly "nginx:
        worker process"); with include_exiting also the old ones."""
        if self.proc is None:
            return set()
        out = set()
        for pid, cmd in children(self.proc.pid):
            if cmd == "nginx: worker process" or (
                    include_exiting and cmd.startswith(
                        "nginx: worker process")):
                out.add(pid)
        return out

    def reload(self, timeout=20, wait_old_exit=False):
        """nginx -s reload, then waits for a whole new set of workers."""
        old = self.worker_pids()
        r = subprocess.run(self.cmd("-s", "reload"), env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        if r.returncode != 0:
            raise RuntimeError("nginx -s reload failed (%d): %s"
                               % (r.returncode, r.stdout.decode()))

        def new_generation():
            if self.proc.poll() is not None:
                raise RuntimeError("nginx master exited during reload")
            cur = self.worker_pids()
            return len(cur) == self.workers and not (cur & old)

        wait_for(new_generation, timeout, what="new worker generation")
        self.known_workers |= self.worker_pids()
        if wait_old_exit:
            wait_for(lambda: not any(pid_alive(p) for p in old), timeout,
                     what="old workers to exit")
        return self.worker_pids()

    def stop(self, timeout=10):
        if self.proc is None:
            return
        pids = self.worker_pids(include_exiting=True) | self.known_workers
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        # a worker outliving its master is ours to end, by pid
        for pid in pids:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None

    # -- logs

    def toll_log_lines(self):
        """Lines of logs/toll.log (format TOLL_LOG_FORMAT) as dicts."""
        out = []
        for line in self.read(self.toll_log).splitlines():
            rec = {}
            for part in line.split("|"):
                k, _, v = part.partition("=")
                rec[k] = v
            out.append(rec)
        return out

    def wait_toll_log(self, tag, timeout=5):
        """The toll.log lines for requests sent with X-Test-Tag: tag, once
        at least one has been written."""
        def find():
            return [r for r in self.toll_log_lines() if r.get("tag") == tag]
        return wait_for(find, timeout, what="toll.log line tag=%s" % tag)

    def bad_lines(self, allowed=()):
        """Error-log (and sanitizer report) lines that fail a test."""
        bad = []
        logs = os.path.join(self.prefix, "logs")
        for name in sorted(os.listdir(logs)):
            path = os.path.join(logs, name)
            if not os.path.isfile(path):
                continue
            sanitizer_report = name.startswith(("asan", "ubsan"))
            if not (sanitizer_report or name in ("error.log", "nginx.out")):
                continue
            text = self.read(path)
            if sanitizer_report and text.strip():
                bad.append("%s: %s" % (name, text.strip()[:4000]))
                continue
            for line in text.splitlines():
                if BAD_LOG_RE.search(line) and not any(
                        re.search(a, line) for a in allowed):
                    bad.append("%s: %s" % (name, line))
        return bad


def nginx_env(preload):
    env = dict(os.environ)
    if preload:
        env["LD_PRELOAD"] = preload
    return env
