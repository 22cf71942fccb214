"""toll_redis's password=, db= and unix: addresses, at run time.

Each worker sends AUTH and SELECT first on every new connection; a store
that refuses AUTH is unavailable (503, logged), never a reason for 401.
"""

import os
import subprocess

import pytest
import redis as redis_py

from helpers import client
from helpers.keys import raw_key
from helpers.problem import check_problem
from helpers.procs import wait_for


PASSWORD = "s3cret-pass"
REDIS_BIN = "/usr/bin/redis-server"


@pytest.fixture
def authed_redis(redis_server):
    redis_server.client.config_set("requirepass", PASSWORD)
    authed = redis_py.Redis(host=redis_server.host, port=redis_server.port,
                            password=PASSWORD, decode_responses=True)
    yield authed
    authed.config_set("requirepass", "")


def toll_http(address, params=""):
    return "    toll_redis %s timeout=500ms %s;\n    toll_zone 1m;" % (
        address, params)


def test_password_and_db(start_nginx, upstream, redis_server, authed_redis):
    db3 = redis_py.Redis(host=redis_server.host, port=redis_server.port,
                         password=PASSWORD, db=3, decode_responses=True)
    in_db3 = raw_key(db3, owner="db3-buyer")
    in_db0 = raw_key(authed_redis, owner="db0-buyer")

    ngx = start_nginx(toll_http=toll_http(
        redis_server.address, "password=%s db=3" % PASSWORD))

    for _ in range(2):
        r = client.request(ngx.port, path="/x", headers=[in_db3.bearer()])
        assert r.status == 200, r.body
        # SELECT 3 took effect: a key that exists only in db 0 is unknown
        r = client.request(ngx.port, path="/x", headers=[in_db0.bearer()])
        check_problem(r, 401, "unauthorized")

    assert PASSWORD not in ngx.logs_text()


@pytest.mark.allow_log(r"\[error\].*AUTH failed")
def test_wrong_password_is_unavailable(start_nginx, upstream, redis_server,
                                       authed_redis):
    k = raw_key(authed_redis, owner="acme")
    ngx = start_nginx(toll_http=toll_http(redis_server.address,
                                          "password=not-the-password"))

    for _ in range(3):
        r = client.request(ngx.port, path="/x", headers=[k.bearer()])
        check_problem(r, 503, "store_unavailable")

    assert upstream.count == 0
    wait_for(lambda: "AUTH failed" in ngx.error_log_text(), timeout=5,
             what="the AUTH failure in the error log")
    assert "not-the-password" not in ngx.logs_text()


def test_unix_socket(start_nginx, upstream, tmp_path):
    sock = str(tmp_path / "redis.sock")
    proc = subprocess.Popen(
        [REDIS_BIN, "--port", "0", "--unixsocket", sock, "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(sock), timeout=10,
                 what="redis unix socket")
        unix = redis_py.Redis(unix_socket_path=sock, decode_responses=True)
        wait_for(lambda: unix.ping(), timeout=10, what="redis PING")
        k = raw_key(unix, owner="unix-buyer")

        ngx = start_nginx(toll_http=toll_http("unix:" + sock))
        for _ in range(2):
            r = client.request(ngx.port, path="/x", headers=[k.bearer()])
            assert r.status == 200, r.body
    finally:
        proc.kill()
        proc.wait()
