"""The harness itself, against plain nginx (no module): if these fail,
no other result of the suite can be trusted."""

import os
import signal

import pytest

from helpers import client
from helpers.procs import wait_for
from helpers.upstream import header_values


def test_upstream_counts_and_keeps_duplicate_headers(start_nginx, upstream):
    ngx = start_nginx(module=False)
    r = client.request(ngx.port, path="/a?b=1", headers=[
        ("X-Dup", "one"), ("x-dup", "two"), ("X-Other", "3")])
    assert r.status == 200 and r.json() == {"ok": True}
    assert r.header("content-type") == "application/json"
    assert upstream.count == 1
    req = upstream.last
    assert req["method"] == "GET" and req["path"] == "/a?b=1"
    assert header_values(req, "X-Dup") == ["one", "two"]
    assert client.request(ngx.port, path="/ping").body == b"pong\n"
    assert upstream.count == 1
    upstream.reset()
    assert upstream.count == 0


def test_raw_bytes_reach_nginx(start_nginx, upstream):
    ngx = start_nginx(module=False)
    # a NUL inside a header value is nginx's own 400
    r = client.request(ngx.port, headers=[("X-API-Key", b"a\x00b")])
    assert r.status == 400
    assert upstream.count == 0


def test_keepalive_client(start_nginx, upstream):
    ngx = start_nginx(module=False)
    c = client.KeepAlive(ngx.port)
    for _ in range(5):
        assert c.request(path="/x").status == 200
    assert c.used == 5
    c.close()
    assert upstream.count == 5


def test_reload_gives_new_workers(start_nginx):
    ngx = start_nginx(module=False, workers=2)
    master, old = ngx.master_pid, ngx.worker_pids()
    assert len(old) == 2
    new = ngx.reload()
    assert len(new) == 2 and not (new & old)
    assert ngx.master_pid == master
    assert client.request(ngx.port, path="/ping").status == 200


def test_log_check_sees_a_crashed_worker(start_nginx):
    ngx = start_nginx(module=False, workers=1)
    (pid,) = ngx.worker_pids()
    # SIGKILL rather than SIGSEGV: under TOLL_PRELOAD, ASan would catch a
    # SEGV and turn it into an exit code
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: "exited on signal" in ngx.error_log_text(), 10,
             what="master to notice the crash")
    bad = ngx.bad_lines()
    assert bad and any("exited on signal 9" in b for b in bad), bad
    assert ngx.bad_lines(allowed=(r"exited on signal 9",)) == []
    # the crash was provoked on purpose: keep the teardown check quiet
    with open(ngx.error_log, "w"):
        pass

    # a sanitizer report file fails a test whatever it says
    report = os.path.join(ngx.prefix, "logs", "asan.12345")
    with open(report, "w") as f:
        f.write("==12345==ERROR: AddressSanitizer: heap-use-after-free\n")
    assert any("asan.12345" in b for b in ngx.bad_lines()), ngx.bad_lines()
    os.unlink(report)
    assert ngx.bad_lines() == []


def test_redis_kill_restart_freeze(redis_server):
    r = redis_server
    r.client.set("a", "1")
    before = r.lookups()
    assert r.client.get("a") == "1"
    assert r.client.get("nope") is None
    assert r.lookups() - before == 2
    r.freeze()
    r.thaw()
    assert r.client.ping()
    r.kill()
    r.restart()
    assert r.client.get("a") is None


def test_nginx_t_reports_errors(nginx_t):
    rc, out, _ = nginx_t("server { listen 127.0.0.1:1; nonsense on; }",
                         module=False)
    assert rc != 0 and 'unknown directive "nonsense"' in out
    rc, out, _ = nginx_t("server { listen 127.0.0.1:1; }", module=False)
    assert rc == 0, out


@pytest.mark.skipif(not os.environ.get("TOLL_PRELOAD"),
                    reason="only under make test-asan (TOLL_PRELOAD)")
def test_sanitizers_are_loaded_in_workers(start_nginx):
    """Under test-asan, a worker really runs with the sanitizer runtimes
    and the instrumented module; otherwise a clean run proves nothing."""
    ngx = start_nginx(workers=1)
    (pid,) = ngx.worker_pids()
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read()
    for lib in os.environ["TOLL_PRELOAD"].split():
        assert os.path.realpath(lib) in maps or os.path.basename(
            os.path.realpath(lib)) in maps, lib
    assert "ngx_http_toll_module.so" in maps
