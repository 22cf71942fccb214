"""Fixtures for toll's integration suites.

Each test gets its own directory (tmp_path), its own redis-server, its
own counting upstream and as many nginx instances as it starts, all on
free loopback ports.  After the test the nginx error logs (and sanitizer
reports under TOLL_PRELOAD) are read: any [alert], [crit], [emerg],
Sanitizer, "runtime error:" or "exited on signal" line fails the test,
unless the test marks it expected with @pytest.mark.allow_log(regex...).
"""

import os
import subprocess

import pytest

from helpers import conf as confmod
from helpers.cluster import RedisCluster, RedisSentinel
from helpers.keys import build_dir
from helpers.procs import (NGINX_BIN, PROXY, Nginx, RedisServer,
                           free_port)
from helpers.upstream import Upstream


MODULE_NAME = "ngx_http_toll_module.so"


def module_path():
    return os.path.join(os.path.abspath(build_dir()), MODULE_NAME)


def nginx_env(prefix):
    """Environment for every nginx command (start, reload, -t): with
    TOLL_PRELOAD, the sanitizer runtimes the module was built against."""
    env = dict(os.environ)
    preload = os.environ.get("TOLL_PRELOAD", "").strip()
    if preload:
        env["LD_PRELOAD"] = preload
        env["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=0:"
                               "log_path=%s/logs/asan" % prefix)
        env["UBSAN_OPTIONS"] = ("print_stacktrace=1:"
                                "log_path=%s/logs/ubsan" % prefix)
    return env


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_log(*regexes): error-log lines matching one of "
        "these are expected and do not fail the test")
    config.addinivalue_line(
        "markers", "slow: timing-based rate-limit tests (seconds each)")


def _require_module():
    path = module_path()
    if not os.path.exists(path):
        pytest.fail("%s is not built (make module)" % path, pytrace=False)
    return path


DEFAULT_LOCATIONS = """
        location / {{
            toll on;
            {proxy}
        }}
        location /open/ {{
            {proxy}
        }}
        location = /ping {{
            return 200 "pong\\n";
        }}
"""

PLAIN_LOCATIONS = """
        location / {{
            {proxy}
        }}
        location = /ping {{
            return 200 "pong\\n";
        }}
"""


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(tmp_path / "redis")
    yield r
    r.close()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    """A 3-primary, 3-replica Redis Cluster for the module's tests
    (helpers/cluster.py); a test that kills a node revives it."""
    c = RedisCluster(tmp_path_factory.mktemp("cluster"))
    print("redis cluster up in %.2fs" % c.startup_s)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory):
    """A primary, a replica and three sentinels for the module's tests."""
    s = RedisSentinel(tmp_path_factory.mktemp("sentinel"))
    print("redis sentinel up in %.2fs" % s.startup_s)
    yield s
    s.stop()


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.close()


@pytest.fixture
def start_nginx(request, tmp_path, redis_server, upstream):
    """Factory: start_nginx(http_extra="", server_extra="", locations=None,
    workers=2, redis_timeout="1s", toll_http=None, module=True,
    toll_log=False, main_extra="", error_log_level="info",
    redis_spec=None) -> Nginx.

    locations=None gives "/" gated (toll on), "/open/" not gated, both
    proxied to the upstream, and "= /ping" answering 200 itself.
    toll_http=None gives toll_redis (to the test's Redis, with
    redis_timeout) and toll_zone 10m; pass a string to replace them.
    redis_spec names another store for that toll_redis (a RedisCluster's
    or RedisSentinel's .spec)."""
    started = []

    def start(http_extra="", server_extra="", locations=None, workers=2,
              redis_timeout="1s", toll_http=None, module=True,
              toll_log=False, main_extra="", error_log_level="info",
              redis_spec=None):
        prefix = str(tmp_path / ("nginx%d" % len(started)))
        confmod.make_prefix(prefix)
        mod = _require_module() if module else None
        if toll_http is None:
            toll_http = ("    toll_redis %s timeout=%s;\n    toll_zone 10m;"
                         % (redis_spec or redis_server.address,
                            redis_timeout)
                         if module else "")
        if locations is None:
            locations = (DEFAULT_LOCATIONS if module
                         else PLAIN_LOCATIONS).format(proxy=PROXY)
        port = free_port()
        text = confmod.render(prefix, port, upstream.port, mod, workers,
                              toll_http, http_extra, server_extra,
                              locations, main_extra, toll_log,
                              error_log_level)
        ngx = Nginx(prefix, text, port, nginx_env(prefix), workers)
        started.append(ngx)
        ngx.start()
        return ngx

    yield start

    redis_server.thaw()
    for ngx in started:
        ngx.stop()
    marker = request.node.get_closest_marker("allow_log")
    allowed = marker.args if marker else ()
    bad = []
    for ngx in started:
        bad += ngx.bad_lines(allowed)
    if bad:
        pytest.fail("unexpected lines in nginx logs:\n" + "\n".join(bad),
                    pytrace=False)


@pytest.fixture
def nginx_t(tmp_path):
    """nginx_t(http_text, main_extra="", module=True) -> (rc, output, text):
    runs `nginx -t` on a config whose http block is http_text, in a
    throw-away prefix whose logs are not checked."""
    counter = [0]

    def run(http_text, main_extra="", module=True):
        counter[0] += 1
        prefix = str(tmp_path / ("nginx-t%d" % counter[0]))
        confmod.make_prefix(prefix)
        mod = _require_module() if module else None
        load = "load_module %s;\n" % mod if mod else ""
        user = "user root;\n" if os.geteuid() == 0 else ""
        text = (load + user + main_extra
                + "pid %s/logs/nginx.pid;\n" % prefix
                + "error_log %s/logs/error.log info;\n" % prefix
                + "events {}\n"
                + "http {\n" + http_text + "\n}\n")
        conf_path = os.path.join(prefix, "conf", "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(text)
        r = subprocess.run([NGINX_BIN, "-t", "-p", prefix + "/", "-c",
                            conf_path, "-e", prefix + "/logs/error.log"],
                           env=nginx_env(prefix), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        return r.returncode, r.stdout.decode("utf-8", "replace"), text

    return run
