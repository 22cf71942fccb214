#!/usr/bin/python3
"""toll demo: Redis, a demo API and nginx with the toll module, on loopback.

    make demo                        # or: demo/run.py --build build
    demo/run.py --build build --check

Starts, on free 127.0.0.1 ports and in a fresh temporary prefix:

  * redis-server, without persistence, holding the key records;
  * demo/upstream.py, a tiny API that answers who called it;
  * Debian's nginx, loading a copy of build/ngx_http_toll_module.so by
    absolute path, configured from demo/nginx.conf: /api/ is gated by
    "toll on", /health is open.

Then it creates a buyer key with build/tollctl, runs each example call once,
prints them as curl lines with the status it really got, and stays up until
Ctrl-C or SIGTERM, when it stops everything and removes the prefix.

With --check it runs the examples, asserts what they must answer, stops and
exits 0 (all good) or 1, so that tests and CI can prove the demo works.

Stdlib only.
"""

import argparse
import http.client
import json
import os
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


HERE = os.path.dirname(os.path.abspath(__file__))

NGINX = "/usr/sbin/nginx"
REDIS_SERVER = "/usr/bin/redis-server"

MODULE_NAME = "ngx_http_toll_module.so"
TOLLCTL_NAME = "tollctl"
SETTLE_NAME = "toll-settle"
DEMO_PROVIDER = "demo-provider"
# the demo drains often, so that its calls are in the ledger at once
SETTLE_INTERVAL = "1s"
LEDGER_TIMEOUT_S = 15.0

DEMO_OWNER = "demo-buyer"
DEMO_PLAN = "free"
# well-formed (base64url, long enough) so that the gate sees a wrong secret
# rather than a malformed credential
WRONG_SECRET = "this-is-not-the-secret"

START_TIMEOUT_S = 10.0      # for each program to start answering
STOP_TIMEOUT_S = 5.0        # for each program to exit after its signal
REQUEST_TIMEOUT_S = 5.0
PORT_ATTEMPTS_MAX = 3       # a picked free port can be taken before we bind

# error log lines that mean something went wrong inside nginx or the module
BAD_LOG_MARKS = ("[alert]", "[crit]", "[emerg]", "exited on signal",
                 "Sanitizer")


class DemoError(Exception):
    """Something did not start or did not answer: say what, then clean up."""


class Stopped(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived."""


def on_signal(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def say(*args):
    print(*args, flush=True)


def free_port():
    """A loopback port that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Example:
    def __init__(self, title, path, headers, expect_status):
        self.title = title
        self.path = path
        self.headers = headers
        self.expect_status = expect_status
        self.status = None
        self.content_type = ""
        self.body = ""

    def curl(self, base):
        cmd = ["curl", "-s", base + self.path]
        for name, value in self.headers.items():
            cmd += ["-H", "%s: %s" % (name, value)]
        return " ".join(shlex.quote(c) for c in cmd)


class Demo:
    def __init__(self, build, nginx_port, keep):
        self.build = build
        self.module = os.path.join(build, MODULE_NAME)
        self.tollctl = os.path.join(build, TOLLCTL_NAME)
        self.settle = os.path.join(build, SETTLE_NAME)
        self.want_nginx_port = nginx_port
        self.keep = keep

        self.prefix = None
        self.loaded_module = None
        self.procs = {}             # name -> Popen, in start order
        self.logs = {}              # name -> path
        self.redis_port = None
        self.upstream_port = None
        self.nginx_port = None
        self.key = None
        self.examples = []

    # -- preflight ---------------------------------------------------------

    def preflight(self):
        missing = [p for p in (self.module, self.tollctl, self.settle)
                   if not os.path.isfile(p)]
        if missing:
            raise DemoError("%s not found: run make first (it builds the "
                            "module and tollctl into %s)"
                            % (", ".join(missing), self.build))
        if not os.access(self.tollctl, os.X_OK):
            raise DemoError("%s is not executable: run make first"
                            % self.tollctl)
        for prog in (NGINX, REDIS_SERVER):
            if not os.access(prog, os.X_OK):
                raise DemoError("%s not found: apt-get install %s"
                                % (prog, os.path.basename(prog)))

    def make_prefix(self):
        self.prefix = tempfile.mkdtemp(prefix="toll-demo-")
        for sub in ("logs", "tmp", "redis"):
            os.mkdir(os.path.join(self.prefix, sub))
        # nginx loads a private copy: "make" rewrites build/*.so in place,
        # and a running nginx whose mapped module changes under it crashes
        self.loaded_module = os.path.join(self.prefix, MODULE_NAME)
        shutil.copyfile(self.module, self.loaded_module)
        logs = os.path.join(self.prefix, "logs")
        self.logs = {
            "access": os.path.join(logs, "access.log"),
            "error": os.path.join(logs, "error.log"),
            "nginx": os.path.join(logs, "nginx.stderr"),
            "redis": os.path.join(logs, "redis.log"),
            "upstream": os.path.join(logs, "upstream.log"),
            "settle": os.path.join(logs, "settle.log"),
        }
        self.ledger = os.path.join(self.prefix, "ledger.db")

    # -- starting ----------------------------------------------------------

    def spawn(self, name, argv, **kw):
        # own session: a Ctrl-C in the terminal reaches only this script,
        # which then stops the children in order; the group id lets us
        # reap an nginx master's workers if the master is gone
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                start_new_session=True, **kw)
        self.procs[name] = proc
        return proc

    def check_alive(self, name):
        proc = self.procs[name]
        rc = proc.poll()
        if rc is not None:
            log = self.logs["error" if name == "nginx" else name]
            raise DemoError("%s exited with status %d%s" % (
                name, rc, (" (log: %s)\n%s" % (log, tail(log))) if log
                else ""))

    def start_redis(self):
        for _ in range(PORT_ATTEMPTS_MAX):
            port = free_port()
            self.spawn("redis", [
                REDIS_SERVER,
                "--bind", "127.0.0.1", "--port", str(port),
                "--save", "", "--appendonly", "no",
                "--dir", os.path.join(self.prefix, "redis"),
                "--logfile", self.logs["redis"],
                "--daemonize", "no",
            ], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            if self.wait_redis(port):
                self.redis_port = port
                return
            self.reap("redis")
            if "Address already in use" not in tail(self.logs["redis"]):
                break
        raise DemoError("redis-server did not start (log: %s)\n%s"
                        % (self.logs["redis"], tail(self.logs["redis"])))

    def wait_redis(self, port):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.procs["redis"].poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", port),
                                              timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def start_settle(self):
        """toll-settle drains the meter into the ledger in the prefix."""
        log = open(self.logs["settle"], "wb")
        try:
            self.spawn("settle", [
                self.settle, "--redis", "127.0.0.1:%d" % self.redis_port,
                "--ledger", self.ledger, "--interval", SETTLE_INTERVAL,
                "--verbose"], stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    def ledger_calls(self):
        """The demo buyer's calls in the ledger (read-only), or None."""
        import sqlite3
        try:
            db = sqlite3.connect("file:%s?mode=ro" % self.ledger, uri=True,
                                 timeout=5)
            try:
                row = db.execute("SELECT sum(calls), sum(amount_micros)"
                                 " FROM transactions WHERE buyer = ?",
                                 (DEMO_OWNER,)).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return row if row and row[0] else None

    def wait_ledger(self):
        deadline = time.monotonic() + LEDGER_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_alive("settle")
            got = self.ledger_calls()
            if got is not None:
                return got
            time.sleep(0.1)
        return None

    def start_upstream(self):
        err = open(self.logs["upstream"], "wb")
        try:
            proc = self.spawn("upstream", [
                sys.executable, os.path.join(HERE, "upstream.py"),
                "--host", "127.0.0.1", "--port", "0",
            ], stdout=subprocess.PIPE, stderr=err)
        finally:
            err.close()

        # upstream.py binds port 0 itself and tells us which port it got
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = b""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if not sel.select(timeout=0.1):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 64)
            if not chunk:
                break
            line += chunk
        sel.close()

        words = line.split()
        if len(words) != 2 or words[0] != b"READY":
            raise DemoError("demo upstream did not start (log: %s)\n%s"
                            % (self.logs["upstream"],
                               tail(self.logs["upstream"])))
        self.upstream_port = int(words[1])

    def render_conf(self, nginx_port):
        with open(os.path.join(HERE, "nginx.conf")) as f:
            text = f.read()
        values = {
            "MODULE": self.loaded_module,
            "PREFIX": self.prefix,
            # nginx workers drop to "nobody" when the master runs as root;
            # this demo listens on loopback only, so keep them as root to
            # read the build and prefix directories whatever their modes
            "USER": "user root;" if os.geteuid() == 0 else "",
            "REDIS_PORT": str(self.redis_port),
            "UPSTREAM_PORT": str(self.upstream_port),
            "NGINX_PORT": str(nginx_port),
        }
        for name, value in values.items():
            text = text.replace("@@%s@@" % name, value)
        if "@@" in text:
            raise DemoError("demo/nginx.conf has an unknown placeholder near: "
                            + text[text.index("@@"):][:40])
        return self.write_conf(text)

    def write_conf(self, text):
        path = os.path.join(self.prefix, "nginx.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def nginx_argv(self, conf):
        # -e: Debian's nginx logs to stderr until the configuration is read
        return [NGINX, "-p", self.prefix + "/", "-c", conf,
                "-e", self.logs["error"]]

    def start_nginx(self):
        for _ in range(PORT_ATTEMPTS_MAX):
            port = self.want_nginx_port or free_port()
            conf = self.render_conf(port)

            test = subprocess.run(self.nginx_argv(conf) + ["-t", "-q"],
                                  stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
            if test.returncode != 0:
                raise DemoError("nginx rejected the demo configuration %s:\n%s"
                                % (conf, test.stdout.decode(errors="replace")
                                   + tail(self.logs["error"])))

            err = open(self.logs["nginx"], "wb")
            try:
                self.spawn("nginx", self.nginx_argv(conf),
                           stdout=err, stderr=subprocess.STDOUT)
            finally:
                err.close()

            if self.wait_nginx(port):
                self.nginx_port = port
                return
            self.reap("nginx")
            if ("Address already in use" not in tail(self.logs["error"])
                    or self.want_nginx_port):
                break
        raise DemoError("nginx did not start (logs: %s, %s)\n%s%s"
                        % (self.logs["error"], self.logs["nginx"],
                           tail(self.logs["error"]), tail(self.logs["nginx"])))

    def wait_nginx(self, port):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.procs["nginx"].poll() is not None:
                return False
            try:
                status, _, _ = self.request(port, "/health", {})
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    # -- keys and calls ----------------------------------------------------

    def create_key(self):
        argv = [self.tollctl, "--redis", "127.0.0.1:%d" % self.redis_port,
                "key", "create", "--owner", DEMO_OWNER, "--plan", DEMO_PLAN]
        try:
            out = subprocess.run(argv, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE,
                                 timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DemoError("tollctl did not answer within %gs: %s"
                            % (START_TIMEOUT_S, shlex.join(argv)))
        if out.returncode != 0:
            raise DemoError("tollctl failed (status %d): %s\n%s"
                            % (out.returncode, shlex.join(argv),
                               out.stderr.decode(errors="replace")))
        try:
            key = json.loads(out.stdout.decode().strip().splitlines()[-1])
            for field in ("key_id", "secret", "token"):
                if not isinstance(key.get(field), str):
                    raise ValueError("no %s" % field)
        except (ValueError, IndexError) as e:
            raise DemoError("tollctl printed no key (%s): %r"
                            % (e, out.stdout[:200]))
        self.key = key

    @staticmethod
    def request(port, path, headers):
        conn = http.client.HTTPConnection("127.0.0.1", port,
                                          timeout=REQUEST_TIMEOUT_S)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            return resp.status, resp.getheader("Content-Type") or "", body
        finally:
            conn.close()

    def run_examples(self):
        token = self.key["token"]
        key_id = self.key["key_id"]
        self.examples = [
            Example("an authenticated call, key in Authorization: Bearer",
                    "/api/hello", {"Authorization": "Bearer " + token}, 200),
            Example("the same call, key in X-API-Key",
                    "/api/hello", {"X-API-Key": token}, 200),
            Example("a wrong secret",
                    "/api/hello",
                    {"Authorization": "Bearer %s:%s" % (key_id, WRONG_SECRET)},
                    401),
            Example("no credential at all",
                    "/api/hello", {}, 401),
            Example("the open health check, no key needed",
                    "/health", {}, 200),
            Example("the buyer's own usage (metered calls, amounts)",
                    "/usage/me", {"Authorization": "Bearer " + token}, 200),
        ]
        for ex in self.examples:
            try:
                ex.status, ex.content_type, ex.body = self.request(
                    self.nginx_port, ex.path, ex.headers)
            except OSError as e:
                ex.status, ex.body = None, "request failed: %s" % e

    def verify(self):
        """What --check asserts; returns a list of failures."""
        failures = []
        for ex in self.examples:
            if ex.status != ex.expect_status:
                failures.append("%s: expected %d, got %s: %s"
                                % (ex.title, ex.expect_status, ex.status,
                                   ex.body.strip()[:200]))
                continue
            if ex.path.startswith("/api/") and ex.status == 200:
                failures += self.verify_echo(ex)
            elif ex.status == 401:
                failures += self.verify_problem(ex)

        log = tail(self.logs["error"], 10000)
        for line in log.splitlines():
            if any(mark in line for mark in BAD_LOG_MARKS):
                failures.append("error log: " + line)

        if self.wait_ledger() is None:
            failures.append("the ledger has no call of %s within %gs (log: "
                            "%s)\n%s" % (DEMO_OWNER, LEDGER_TIMEOUT_S,
                                          self.logs["settle"],
                                          tail(self.logs["settle"])))

        failures += self.verify_metrics()

        access = tail(self.logs["access"], 10000)
        if ("buyer=%s" % DEMO_OWNER) not in access:
            failures.append("access log has no line with buyer=%s (%s)"
                            % (DEMO_OWNER, self.logs["access"]))
        return failures

    def verify_metrics(self):
        """The examples' calls show in the metrics: 2 passed, 2 refused."""
        status, ctype, body = self.request(self.nginx_port, "/toll/metrics",
                                           {})
        if status != 200 or not ctype.startswith("text/plain; version=0.0.4"):
            return ["/toll/metrics answered %s %s" % (status, ctype)]
        want = ['toll_requests_total{service="hello",decision="passed"} 2',
                'toll_requests_total{service="hello",'
                'decision="unauthorized"} 2']
        return ["/toll/metrics has no line %r" % w for w in want
                if w not in body.splitlines()]

    def verify_echo(self, ex):
        try:
            doc = json.loads(ex.body)
        except ValueError:
            return ["%s: upstream answer is not JSON: %r"
                    % (ex.title, ex.body)]
        want = {"buyer": DEMO_OWNER, "key_id": self.key["key_id"],
                "plan": DEMO_PLAN}
        return ["%s: upstream saw %s=%r, expected %r"
                % (ex.title, k, doc.get(k), v)
                for k, v in want.items() if doc.get(k) != v]

    def verify_problem(self, ex):
        out = []
        if not ex.content_type.startswith("application/problem+json"):
            out.append("%s: Content-Type %r, expected application/problem+json"
                       % (ex.title, ex.content_type))
        try:
            code = json.loads(ex.body).get("code")
        except (ValueError, AttributeError):
            code = None
        if code != "unauthorized":
            out.append("%s: problem code %r, expected 'unauthorized'"
                       % (ex.title, code))
        if self.key["secret"] in ex.body:
            out.append("%s: the secret appears in the body" % ex.title)
        return out

    # -- talking to the user -----------------------------------------------

    def banner(self):
        base = "http://127.0.0.1:%d" % self.nginx_port
        say("")
        say("toll demo is up  (prefix %s)" % self.prefix)
        say("")
        say("  gateway   %-28s nginx + %s (a copy of build's)"
            % (base, MODULE_NAME))
        say("  upstream  %-28s demo/upstream.py, answers who called"
            % ("http://127.0.0.1:%d" % self.upstream_port))
        say("  redis     %-28s key records, no persistence"
            % ("127.0.0.1:%d" % self.redis_port))
        say("")
        say("A buyer key was created with tollctl (owner %s, plan %s):"
            % (DEMO_OWNER, DEMO_PLAN))
        say("  key_id  %s" % self.key["key_id"])
        say("  token   %s" % self.key["token"])
        say("")
        say("Try these (each was just run once; the status is what it got):")
        for n, ex in enumerate(self.examples, 1):
            mark = "ok" if ex.status == ex.expect_status else "UNEXPECTED"
            say("")
            say("%d. %s  -> HTTP %s (%s)" % (n, ex.title, ex.status, mark))
            say("   " + ex.curl(base))
            for line in ex.body.rstrip("\n").splitlines()[:6]:
                say("   " + line)
        say("")
        say("The metered calls went into the ledger (toll-settle, every %s):"
            % SETTLE_INTERVAL)
        ctl = "%s --ledger %s" % (self.tollctl, self.ledger)
        say("   %s ledger balance buyer:%s" % (ctl, DEMO_OWNER))
        say("   %s ledger balance provider:%s" % (ctl, DEMO_PROVIDER))
        say("   %s ledger entries --limit 5" % ctl)
        say("   %s settlement create --provider %s --from 2020-01-01 "
            "--to @$(date +%%s)" % (ctl, DEMO_PROVIDER))
        say("")
        say("For the operator (docs/metrics.md):")
        say("   curl -s %s/toll/metrics | grep toll_requests_total" % base)
        say("   dashboard: open %s/toll/dashboard in a browser" % base)
        say("")
        say("More keys:")
        say("   %s --redis 127.0.0.1:%d key create --owner alice --plan free"
            % (self.tollctl, self.redis_port))
        say("")
        say("Logs:")
        say("   access  %s   (auth=, key=, buyer=, plan= per call)"
            % self.logs["access"])
        say("   error   %s   (the reason for each refusal)"
            % self.logs["error"])
        say("   redis   %s" % self.logs["redis"])
        say("   settle  %s" % self.logs["settle"])
        say("")

    # -- running and stopping ----------------------------------------------

    def wait_forever(self):
        say("Press Ctrl-C to stop; the prefix above is removed on exit.")
        while True:
            for name in list(self.procs):
                self.check_alive(name)
            time.sleep(0.5)

    def reap(self, name):
        """Stops one child: its polite signal, then SIGKILL to its group."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        # nginx: SIGQUIT is a graceful shutdown; the others take SIGTERM
        polite = signal.SIGQUIT if name == "nginx" else signal.SIGTERM
        if proc.poll() is None:
            try:
                proc.send_signal(polite)
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                say("%s did not stop within %gs, killing it"
                    % (name, STOP_TIMEOUT_S))
        # the group is the child's own session: it holds nginx's workers
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say("%s (pid %d) would not exit" % (name, proc.pid))
        if proc.stdout:
            proc.stdout.close()

    def stop(self):
        # stop in reverse order: the gateway first, so that nothing is
        # proxied to an upstream or a store that is already gone
        for name in reversed(list(self.procs)):
            self.reap(name)
        if self.prefix and os.path.isdir(self.prefix):
            if self.keep:
                say("kept %s" % self.prefix)
            else:
                shutil.rmtree(self.prefix, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(
        description="Run Redis, a demo API and nginx with the toll module.")
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"),
                    help="directory holding %s, %s and %s (default: build)"
                    % (MODULE_NAME, TOLLCTL_NAME, SETTLE_NAME))
    ap.add_argument("--check", action="store_true",
                    help="run the examples, assert them, clean up, exit")
    ap.add_argument("--port", type=int, default=0,
                    help="gateway port (default: a free one)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary prefix (logs) on exit")
    args = ap.parse_args()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)

    demo = Demo(os.path.abspath(args.build), args.port, args.keep)
    rc = 1
    try:
        demo.preflight()
        demo.make_prefix()
        demo.start_redis()
        demo.start_upstream()
        demo.start_nginx()
        demo.start_settle()
        demo.create_key()
        demo.run_examples()
        demo.banner()
        if args.check:
            failures = demo.verify()
            for f in failures:
                say("FAIL: " + f)
            if failures:
                say("error log tail (%s):\n%s"
                    % (demo.logs["error"], tail(demo.logs["error"])))
            say("demo check: %s" % ("FAILED" if failures else "passed"))
            rc = 1 if failures else 0
        else:
            demo.wait_forever()
    except Stopped as e:
        say("\n%s: stopping" % e)
        # Ctrl-C is how an interactive demo ends; it only fails a --check
        rc = 1 if args.check else 0
    except DemoError as e:
        print("demo: error: %s" % e, file=sys.stderr, flush=True)
        if not args.keep:
            print("demo: (the prefix is removed on exit; --keep keeps it)",
                  file=sys.stderr, flush=True)
        rc = 1
    finally:
        # a second Ctrl-C must not cut the cleanup short; every wait in it
        # is bounded by STOP_TIMEOUT_S
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        demo.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
