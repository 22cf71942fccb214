"""Whether the built programs take a Cluster or Sentinel store (issue 18).

The suites for Redis Cluster and Sentinel were written before the module,
tollctl and toll-settle learnt the syntax; each test asks here and skips,
naming what is missing, until the part it needs is built.  The probes
ask about the syntax only, against seeds nothing listens on, so that a
part that takes the syntax and then fails on a real store fails its
tests instead of skipping them:

    module_takes(kind)   `nginx -t` accepts `toll_redis cluster=...;`
    tollctl_takes(kind)  tollctl --redis 'cluster=...' is not refused as
                         a bad value (exit 64/65, "invalid")
    settle_takes(kind)   the same for toll-settle's "redis" line (78)

kind is "cluster" or "sentinel".
"""

import functools
import os
import subprocess
import tempfile

import pytest

from helpers.keys import build_dir
from helpers.procs import NGINX_BIN, free_port

# seeds nothing listens on: the probes must never reach a store
_DEAD = "127.0.0.1:%d"


def probe_spec(kind):
    a, b = _DEAD % free_port(), _DEAD % free_port()
    if kind == "cluster":
        return "cluster=%s,%s" % (a, b)
    return "sentinel=%s,%s master=toll" % (a, b)


def _refused(rc, out, bad_codes):
    return rc in bad_codes or "invalid" in out.lower()


def _run(argv):
    """(exit code, output); a program still trying its seeds after 10 s
    took the value (it did not refuse it), so counts as exit 69."""
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
    except subprocess.TimeoutExpired:
        return 69, ""
    return r.returncode, r.stdout.decode(errors="replace")


@functools.lru_cache(maxsize=None)
def module_takes(kind):
    return module_accepts(probe_spec(kind))


@functools.lru_cache(maxsize=None)
def tollctl_takes(kind):
    return tollctl_accepts(probe_spec(kind))


@functools.lru_cache(maxsize=None)
def settle_takes(kind):
    return settle_accepts(probe_spec(kind))


def module_accepts(words):
    mod = os.path.join(os.path.abspath(build_dir()),
                       "ngx_http_toll_module.so")
    if not os.path.exists(mod):
        return False
    with tempfile.TemporaryDirectory() as prefix:
        for d in ("conf", "logs"):
            os.makedirs(os.path.join(prefix, d))
        conf = os.path.join(prefix, "conf", "nginx.conf")
        with open(conf, "w") as f:
            f.write("load_module %s;\n%spid %s/logs/nginx.pid;\n"
                    "error_log %s/logs/error.log;\nevents {}\n"
                    "http {\n    toll_redis %s timeout=200ms;\n"
                    "    toll_zone 1m;\n}\n"
                    % (mod, "user root;\n" if os.geteuid() == 0 else "",
                       prefix, prefix, words))
        r = subprocess.run([NGINX_BIN, "-t", "-p", prefix + "/", "-c", conf,
                            "-e", prefix + "/logs/error.log"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
    return r.returncode == 0


def tollctl_accepts(text):
    path = os.path.join(build_dir(), "tollctl")
    if not os.access(path, os.X_OK):
        return False
    rc, out = _run([path, "--redis", text, "--json", "key",
                    "list"])
    return not _refused(rc, out, (64, 65))


def settle_accepts(text):
    path = os.path.join(build_dir(), "toll-settle")
    if not os.access(path, os.X_OK):
        return False
    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "settle.conf")
        with open(conf, "w") as f:
            f.write("redis %s\nledger %s/ledger.db\n" % (text, d))
        rc, out = _run([path, "-c", conf, "--once"])
    return not _refused(rc, out, (64, 78))


def needs(kind, module=False, tollctl=False, settle=False):
    """A skipif mark: decided at collection, so that a module whose tests
    all skip does not start its cluster for nothing."""
    missing = _missing(kind, module, tollctl, settle)
    return pytest.mark.skipif(bool(missing), reason="issue 18: not built "
                              "yet: " + ", ".join(missing))


def _missing(kind, module, tollctl, settle):
    missing = []
    if module and not module_takes(kind):
        missing.append("the module (toll_redis %s=...)" % kind)
    if tollctl and not tollctl_takes(kind):
        missing.append("tollctl (--redis '%s=...')" % kind)
    if settle and not settle_takes(kind):
        missing.append("toll-settle (redis %s=...)" % kind)
    return missing


def need(kind, module=False, tollctl=False, settle=False):
    """Skips the calling test unless the parts named take `kind`."""
    missing = _missing(kind, module, tollctl, settle)
    if missing:
        pytest.skip("issue 18: not built yet: " + ", ".join(missing))
