"""`toll_redis cluster=...` and `sentinel=... master=...` at `nginx -t`:
the good forms pass with nothing listening (checking a config must not
need the store), every bad one is refused with a message that names what
is wrong, on the directive's line."""

import pytest

from helpers.procs import free_port
from test_config import MARK, assert_refused, http_block


def _ok(nginx_t, redis_line):
    text = http_block(redis_line)
    rc, out, _ = nginx_t(text)
    assert rc == 0, out


@pytest.mark.parametrize("line", [
    "toll_redis cluster=127.0.0.1:{a};",
    "toll_redis cluster=127.0.0.1:{a},127.0.0.1:{b},[::1]:{a} "
    "timeout=300ms password=s3cret;",
    "toll_redis cluster=localhost:{a} replicas=0;",
    "toll_redis cluster=127.0.0.1:{a} replicas=2 replica_wait=20ms;",
    "toll_redis sentinel=127.0.0.1:{a},127.0.0.1:{b} master=toll;",
    "toll_redis sentinel=127.0.0.1:{a} master=my-primary.1 db=2 "
    "password=s3cret timeout=2s;",
    "toll_redis 127.0.0.1:{a} replicas=1 replica_wait=100ms;",
])
def test_store_forms_pass(nginx_t, line):
    _ok(nginx_t, line.format(a=free_port(), b=free_port()))


@pytest.mark.parametrize("line,words", [
    ("toll_redis cluster=;", ("at least one",)),
    ("toll_redis cluster=127.0.0.1:1,,127.0.0.1:2;", ("empty",)),
    ("toll_redis cluster=127.0.0.1:1,127.0.0.1:1;", ("twice",)),
    ("toll_redis cluster=127.0.0.1;", ("invalid address",)),
    ("toll_redis cluster=127.0.0.1:0;", ("invalid address",)),
    ("toll_redis cluster=unix:/tmp/r.sock;", ("unix socket",)),
    ("toll_redis cluster=" + ",".join("127.0.0.1:%d" % (7000 + i)
                                      for i in range(17)) + ";",
     ("at most 16",)),
    ("toll_redis cluster=127.0.0.1:1 master=toll;", ("sentinel=",)),
    ("toll_redis cluster=127.0.0.1:1 db=1;", ("Cluster",)),
    ("toll_redis sentinel=127.0.0.1:1;", ("master=",)),
    ("toll_redis sentinel=127.0.0.1:1 master=;", ("master=",)),
    ("toll_redis sentinel=127.0.0.1:1 master=" + "m" * 65 + ";",
     ("master=",)),
    ("toll_redis 127.0.0.1:1 master=toll;", ("sentinel=",)),
    ("toll_redis cluster=127.0.0.1:1 replicas=17;", ("replicas",)),
    ("toll_redis cluster=127.0.0.1:1 replicas=x;", ("replicas",)),
    ("toll_redis cluster=127.0.0.1:1 replica_wait=0;", ("replica_wait",)),
    ("toll_redis cluster=127.0.0.1:1 timeout=100ms replica_wait=100ms;",
     ("shorter than",)),
])
def test_bad_store_refused(nginx_t, line, words):
    text = http_block(line.replace(";", "; " + MARK, 1)
                      if line.count(";") == 1 else line + " " + MARK)
    rc, out, full = nginx_t(text)
    assert_refused(rc, out, full, *words)


def test_replica_wait_unchecked_without_replicas(nginx_t):
    # one Redis waits for no replica: its replica_wait is never used
    _ok(nginx_t, "toll_redis 127.0.0.1:%d timeout=50ms replica_wait=100ms;"
        % free_port())
