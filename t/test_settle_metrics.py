"""toll-settle's own metrics (docs/settle.md, "Metrics").

    1. the page: promtool accepts it, every family has HELP and TYPE, the
       headers of text format 0.0.4
    2. the figures: known usage, one pass, counters exact; replays; a
       claim left for the operator; webhook deliveries and attempts
    3. the lag grows while Redis is away and falls back when it returns
    4. the listener: 404, 405, 400; a silent or dripping client does not
       hold a scrape; SIGTERM is prompt with a connection held open, and
       in a standby that waits for the ledger's lock
    5. starting: a taken port, a bad metrics_listen (file and command
       line), --once without a listener
"""

import http.client
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time

import pytest

from helpers.httpd import QuietHandler, serve
from helpers.procs import free_port, port_answers, wait_for
from helpers.settle import (Settle, add_into, day, ledger_check,
                            ledger_usage, settle_bin, usage_key,
                            wait_drained, write_usage)


PROMTOOL = "/usr/bin/promtool"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name: (type, the label sets it must have)
FAMILIES = {
    "toll_settle_build_info": ("gauge", [("version",)]),
    "toll_settle_passes_total": ("counter", [()]),
    "toll_settle_batches_total": ("counter", [()]),
    "toll_settle_replays_total": ("counter", [()]),
    "toll_settle_records_total": ("counter", [()]),
    "toll_settle_balance_transactions_total": ("counter", [()]),
    "toll_settle_balance_alerts_total": ("counter", [("kind",)]),
    "toll_settle_drained_micros_total": ("counter", [()]),
    "toll_settle_errors_total": ("counter", [("stage",)]),
    "toll_settle_last_pass_timestamp_seconds": ("gauge", [()]),
    "toll_settle_drain_lag_seconds": ("gauge", [()]),
    "toll_settle_open_claims": ("gauge", [()]),
    "toll_settle_quarantined_total": ("counter", [()]),
    "toll_settle_quarantine_claims": ("gauge", [()]),
    "toll_settle_ledger_debits_micros": ("gauge", [()]),
    "toll_settle_ledger_credits_micros": ("gauge", [()]),
    "toll_settle_ledger_transactions": ("gauge", [()]),
    "toll_settle_webhook_attempts_total": ("counter", [()]),
    "toll_settle_webhook_deliveries_total": ("counter", [("result",)]),
    "toll_settle_webhook_pending": ("gauge", [()]),
}

SANITIZER_MARKS = ("Sanitizer", "runtime error:")

# a silent client is dropped after 2 s; a scrape behind it waits no more
SCRAPE_BEHIND_SILENT_MAX_S = 3.0


# ---------------------------------------------------------------- helpers


class Page:
    """A scraped page: status, headers, body and the samples by name."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        self.samples = {}
        for line in body.decode().splitlines():
            if line.startswith("#") or not line:
                continue
            key, value = line.rsplit(" ", 1)
            self.samples[key] = float(value)

    def __getitem__(self, key):
        return self.samples[key]


def scrape(port, path="/metrics", method="GET", timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        body = r.read()
        return Page(r.status, {k.lower(): v for k, v in r.getheaders()},
                    body if r.status == 200 else b"")
    finally:
        conn.close()


def raw(port, data, timeout=10):
    """Sends data as is and reads the answer to EOF: (status, head, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines[0] else 0
    headers = {}
    for ln in lines[1:]:
        name, _, value = ln.partition(": ")
        headers[name.lower()] = value
    return status, headers, body


def promtool(body):
    return subprocess.run([PROMTOOL, "check", "metrics"], input=body,
                          capture_output=True, timeout=30)


@pytest.fixture
def settle(redis_server, tmp_path):
    """settle(conf_lines=()) -> Settle on the test's Redis and ledger; after
    the test every log is read for sanitizer reports."""
    made = []

    def make(conf_lines=()):
        s = Settle(redis_server, tmp_path / "ledger.db", conf_lines,
                   workdir=str(tmp_path))
        made.append(s)
        return s

    yield make
    logs = []
    for s in made:
        for p in s.procs:
            logs.append(Settle.log_text(p))
        s.close()
    for log in logs:
        for mark in SANITIZER_MARKS:
            assert mark not in log, log


def start(s, interval="100ms", *extra, port=None):
    """A daemon listening for metrics on a free port: (process, port)."""
    port = port or free_port()
    p = s.start("--metrics-listen", "127.0.0.1:%d" % port, *extra,
                interval=interval)

    def up():
        assert p.poll() is None, Settle.log_text(p)
        return port_answers(port)

    wait_for(up, 10, what="the metrics listener on %d" % port)
    return p, port


def wait_page(port, pred, timeout=20, what="metrics"):
    """Scrapes until pred(page) holds; the last page."""
    last = []

    def ok():
        page = scrape(port)
        last[:] = [page]
        return pred(page)

    try:
        wait_for(ok, timeout, interval=0.05, what=what)
    except TimeoutError:
        raise AssertionError("%s; last page:\n%s"
                             % (what, last[0].body.decode() if last else ""))
    return last[0]


def stop_ok(s, p):
    t0 = time.monotonic()
    rc = s.stop(p)
    assert rc == 0, "exit %s:\n%s" % (rc, Settle.log_text(p))
    return time.monotonic() - t0


# ============================================================== 1. the page

def test_promtool_accepts_the_page(settle):
    s = settle()
    p, port = start(s)
    page = wait_page(port, lambda pg: pg["toll_settle_passes_total"] >= 1)

    assert page.status == 200
    assert page.headers["content-type"] == CONTENT_TYPE
    assert int(page.headers["content-length"]) == len(page.body)
    assert page.headers["connection"] == "close"

    r = promtool(page.body)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == b"" and r.stderr == b"", r.stdout + r.stderr

    # every family: HELP, TYPE, its samples and no others
    text = page.body.decode()
    seen = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_text = line[7:].split(" ", 1)
            assert help_text.strip(), line
            seen.setdefault(name, {})["help"] = True
        elif line.startswith("# TYPE "):
            name, mtype = line[7:].split(" ")
            seen.setdefault(name, {})["type"] = mtype
    assert set(seen) == set(FAMILIES), sorted(set(seen) ^ set(FAMILIES))
    for name, (mtype, _labels) in FAMILIES.items():
        assert seen[name] == {"help": True, "type": mtype}, name
    families = {k.split("{")[0] for k in page.samples}
    assert families == set(FAMILIES)

    assert page['toll_settle_build_info{version="0.1.0"}'] == 1
    for stage in ("redis", "ledger"):
        assert page['toll_settle_errors_total{stage="%s"}' % stage] == 0
    for result in ("delivered", "failed"):
        assert page['toll_settle_webhook_deliveries_total{result="%s"}'
                    % result] == 0
    for kind in ("low", "exhausted"):
        assert page['toll_settle_balance_alerts_total{kind="%s"}'
                    % kind] == 0
    # bounded series: nothing per buyer, key or service, ever
    assert len(page.samples) == 23

    # a query string is the same page; HEAD is its head
    assert scrape(port, "/metrics?x=1&name[]=y").status == 200
    status, headers, body = raw(port, b"HEAD /metrics HTTP/1.1\r\n"
                                      b"Host: x\r\n\r\n")
    assert status == 200 and body == b""
    assert headers["content-type"] == CONTENT_TYPE
    assert int(headers["content-length"]) > 1000
    status, _headers, body = raw(port, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert status == 200 and b"toll_settle_passes_total" in body

    stop_ok(s, p)


# =========================================================== 2. the figures

def test_counters_match_one_pass_exactly(settle, redis_server):
    rc = redis_server.client
    want = {}
    for buyer, d, svc, prov, calls, free, price in (
            ("alice", day(), "search", "acme", 7, 2, 50000),
            ("alice", day(), "geo", "globex", 3, 0, 123),
            ("alice", day(-1), "search", "acme", 1, 0, 50000),
            ("bob", day(), "geo", "globex", 10, 4, 123),
            ("bob", day(), "search", "acme", 5, 5, 50000)):
        add_into(want, (buyer, d, svc),
                 write_usage(rc, buyer, svc, prov, d=d, calls=calls,
                             free=free, price_micros=price))
    amount = sum(v["amount_micros"] for v in want.values())
    assert amount == 5 * 50000 + 3 * 123 + 50000 + 6 * 123

    # a long interval: the pass at start is the only one
    s = settle()
    t0 = time.time()
    p, port = start(s, "60s")
    page = wait_page(port, lambda pg: pg["toll_settle_passes_total"] >= 1)
    assert ledger_usage(s.ledger) == want
    sums = ledger_check(s.ledger)

    assert page["toll_settle_passes_total"] == 1
    assert page["toll_settle_batches_total"] == 3       # buyer-days
    assert page["toll_settle_records_total"] == 5       # their services
    assert page["toll_settle_drained_micros_total"] == amount
    assert page["toll_settle_replays_total"] == 0
    assert page["toll_settle_ledger_debits_micros"] == amount
    assert page["toll_settle_ledger_credits_micros"] == amount
    assert sums == {"debits": amount, "credits": amount}
    assert page["toll_settle_ledger_transactions"] == 5
    assert page["toll_settle_open_claims"] == 0
    assert page['toll_settle_errors_total{stage="redis"}'] == 0
    assert page['toll_settle_errors_total{stage="ledger"}'] == 0
    assert t0 - 1 <= page["toll_settle_last_pass_timestamp_seconds"] \
        <= time.time()
    assert 0 <= page["toll_settle_drain_lag_seconds"] < 30

    # no pass since: the counters hold, the lag grows with the clock
    time.sleep(0.3)
    again = scrape(port)
    for k in ("toll_settle_passes_total", "toll_settle_batches_total",
              "toll_settle_drained_micros_total",
              "toll_settle_last_pass_timestamp_seconds"):
        assert again[k] == page[k], k
    assert again["toll_settle_drain_lag_seconds"] \
        >= page["toll_settle_drain_lag_seconds"] + 0.25

    stop_ok(s, p)


def test_replay_and_claim_left_for_the_operator(settle, redis_server):
    """A claim committed by a run killed before its delete is a replay; a
    claim the meter did not write is set aside in quarantine, and counted
    so."""
    rc = redis_server.client
    s = settle()
    rec = write_usage(rc, "carol", "svc", "acme", calls=4)
    p = s.once(env={"TOLL_SETTLE_CRASH": "commit"})
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert rc.scard("toll:drain:open") == 1

    bad = usage_key("mallory", day())
    rc.hset(bad, mapping={"svc:calls": "1", "svc:provider": "acme",
                          "svc:amount_micros": "1.5"})
    rc.sadd("toll:usage:index", bad)

    d, port = start(s)
    page = wait_page(port, lambda pg: pg["toll_settle_passes_total"] >= 2)
    assert page["toll_settle_replays_total"] == 1
    assert page["toll_settle_batches_total"] == 0       # posted before
    assert page["toll_settle_drained_micros_total"] == 0
    assert page["toll_settle_ledger_debits_micros"] == rec["amount_micros"]
    assert page["toll_settle_open_claims"] == 0
    assert page["toll_settle_quarantined_total"] == 1
    assert page["toll_settle_quarantine_claims"] == 1
    assert rc.scard("toll:drain:open") == 0
    assert rc.hlen("toll:drain:quarantine") == 1
    assert Settle.log_text(d).count(
        "holds a field the meter does not write") == 1
    stop_ok(s, d)


class Receiver:
    """A webhook receiver on a free loopback port: answer(path) gives
    the status of each POST."""

    def __init__(self, answer):
        self.posts = []
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append(self.path)
                self.send_response(answer(self.path))
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server, _ = serve(Handler)
        self.port = self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def add_event(ledger, etype, eid):
    db = sqlite3.connect(str(ledger), timeout=30)
    try:
        with db:
            db.execute("INSERT INTO events (id, type, created_at, body)"
                       " VALUES (?, ?, ?, ?)",
                       (eid, etype, int(time.time()),
                        '{"id":"%s","type":"%s"}' % (eid, etype)))
    finally:
        db.close()


def test_webhook_counters(settle):
    """One delivery answered 200 at once, one answered 500 until it is
    given up after 4 attempts (1 s, 2 s, 4 s apart)."""
    rx = Receiver(lambda path: 200 if path == "/ok" else 500)
    try:
        s = settle(["webhook http://127.0.0.1:%d/ok events=settlement.created"
                    " secret=whsec_a" % rx.port,
                    "webhook http://127.0.0.1:%d/bad "
                    "events=settlement.completed secret=whsec_b" % rx.port,
                    "webhook_timeout 2s"])
        p, port = start(s)
        wait_page(port, lambda pg: pg["toll_settle_passes_total"] >= 1)

        add_event(s.ledger, "settlement.created", "evt_ok1")
        add_event(s.ledger, "settlement.completed", "evt_bad1")

        delivered = 'toll_settle_webhook_deliveries_total{result="delivered"}'
        failed = 'toll_settle_webhook_deliveries_total{result="failed"}'
        page = wait_page(port, lambda pg: pg[delivered] == 1
                         and pg["toll_settle_webhook_pending"] == 1,
                         what="one delivered, one pending")
        assert page[failed] == 0
        assert rx.posts.count("/ok") == 1

        page = wait_page(port, lambda pg: pg[failed] == 1
                         and pg["toll_settle_webhook_pending"] == 0,
                         timeout=30, what="the failing one given up")
        assert page[delivered] == 1
        assert page["toll_settle_webhook_attempts_total"] == 1 + 4
        assert rx.posts.count("/bad") == 4
        stop_ok(s, p)
    finally:
        rx.close()


# ================================================================ 3. the lag

def test_drain_lag_grows_while_redis_is_away(settle, redis_server):
    s = settle()
    p, port = start(s, "100ms")
    lag = "toll_settle_drain_lag_seconds"
    redis_err = 'toll_settle_errors_total{stage="redis"}'
    page = wait_page(port, lambda pg: pg["toll_settle_passes_total"] >= 1
                     and pg[lag] < 1)
    passes = page["toll_settle_passes_total"]

    redis_server.kill()
    down = wait_page(port, lambda pg: pg[lag] >= 2 and pg[redis_err] >= 1,
                     what="the lag past 2 s with Redis away")
    time.sleep(0.3)
    later = scrape(port)
    assert later[lag] >= down[lag] + 0.25
    # no pass completes while Redis is away
    assert later["toll_settle_passes_total"] == down["toll_settle_passes_total"]
    assert later["toll_settle_last_pass_timestamp_seconds"] \
        == down["toll_settle_last_pass_timestamp_seconds"]
    assert down["toll_settle_passes_total"] >= passes

    redis_server.restart()
    want = {}
    add_into(want, ("back", day(), "s"),
             write_usage(redis_server.client, "back", "s", "p", calls=2))
    back = wait_page(port, lambda pg: pg[lag] < 1
                     and pg["toll_settle_batches_total"] == 1,
                     what="the lag back under 1 s")
    assert back["toll_settle_last_pass_timestamp_seconds"] \
        > down["toll_settle_last_pass_timestamp_seconds"]
    assert back[redis_err] >= down[redis_err]
    assert ledger_usage(s.ledger) == want
    stop_ok(s, p)


# =========================================================== 4. the listener

BAD_REQUESTS = [
    (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"GET /metrics/ HTTP/1.1\r\n\r\n", 404),
    (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
    (b"GET / HTTP/1.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"DELETE /metrics HTTP/1.1\r\n\r\n", 405),
    (b"garbage\r\n\r\n", 400),
    (b"GET metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
    (b"GET /metrics\r\n\r\n", 400),
    (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
    (b"\x00\x01\x02\xff\r\n\r\n", 400),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    (b"G" * 9000, 400),
]


def test_bad_requests(settle):
    s = settle()
    p, port = start(s)
    for data, status in BAD_REQUESTS:
        for _ in range(2):           # twice: nothing carries over
            got, headers, body = raw(port, data)
            assert got == status, (data[:40], got)
            assert int(headers["content-length"]) == len(body)
            assert headers["connection"] == "close"
            if status == 405:
                assert headers["allow"] == "GET, HEAD"
    # and the next scrape is a page
    assert scrape(port).status == 200
    stop_ok(s, p)


def test_silent_clients_do_not_hold_a_scrape(settle, redis_server):
    s = settle()
    p, port = start(s)
    t0 = time.monotonic()
    scrape(port)
    print("a scrape: %.1f ms" % ((time.monotonic() - t0) * 1000))

    # connects and says nothing
    silent = socket.create_connection(("127.0.0.1", port))
    time.sleep(0.1)
    t0 = time.monotonic()
    assert scrape(port).status == 200
    took = time.monotonic() - t0
    print("a scrape behind a silent client: %.2f s" % took)
    assert took < SCRAPE_BEHIND_SILENT_MAX_S

    # drips a byte every 0.3 s: bounded by the whole request's deadline
    drip = socket.create_connection(("127.0.0.1", port))
    stop = threading.Event()

    def dripper():
        for ch in b"GET /metrics HTTP/1.1\r\n":
            if stop.is_set():
                return
            try:
                drip.send(bytes([ch]))
            except OSError:
                return
            time.sleep(0.3)

    t = threading.Thread(target=dripper)
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    assert scrape(port).status == 200
    took = time.monotonic() - t0
    print("a scrape behind a dripping client: %.2f s" % took)
    assert took < SCRAPE_BEHIND_SILENT_MAX_S
    stop.set()
    t.join()

    # a held connection holds the listener, never the drain
    hold = socket.create_connection(("127.0.0.1", port))
    write_usage(redis_server.client, "held", "s", "p", calls=1)
    wait_drained(redis_server.client, timeout=5)

    for sock in (silent, drip, hold):
        sock.close()
    stop_ok(s, p)


def test_sigterm_is_prompt_with_a_connection_held(settle):
    s = settle()
    p, port = start(s, "60s")
    wait_page(port, lambda pg: pg["toll_settle_passes_total"] >= 1)
    held = socket.create_connection(("127.0.0.1", port))
    held.send(b"GET /met")
    time.sleep(0.2)
    took = stop_ok(s, p)
    print("SIGTERM to exit with a connection held: %.2f s" % took)
    assert took < 1.5
    held.close()
    assert not port_answers(port)


def test_standby_answers_and_stops(settle):
    """A worker waiting for another's lock answers with no passes and a
    lag since its start, and SIGTERM ends its wait (and its listener)."""
    s = settle()
    active = s.start()
    wait_for(lambda: os.path.exists(s.ledger), 10, what="the ledger")
    standby, port = start(s)
    wait_for(lambda: "waiting for it to stop" in Settle.log_text(standby),
             10, what="the standby waits")
    time.sleep(0.3)
    page = scrape(port)
    assert page["toll_settle_passes_total"] == 0
    assert page["toll_settle_last_pass_timestamp_seconds"] == 0
    assert page["toll_settle_drain_lag_seconds"] >= 0.3
    took = stop_ok(s, standby)
    assert took < 1.5
    assert not port_answers(port)
    stop_ok(s, active)


# ============================================================ 5. starting

def test_port_taken_by_another_program(settle, tmp_path):
    s = settle()
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        r = subprocess.run(s.argv("--metrics-listen", "127.0.0.1:%d" % port),
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 69, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("toll-settle: cannot listen for metrics on "
                               "127.0.0.1:%d: " % port), lines[0]
    assert "in use" in lines[0]
    # refused before the ledger was touched
    assert not os.path.exists(s.ledger)


def test_second_daemon_on_the_port(settle):
    """A second worker (which would wait for the ledger's lock) is told at
    once that the port is taken; the first one goes on."""
    s = settle()
    first, port = start(s)
    wait_page(port, lambda pg: pg["toll_settle_passes_total"] >= 1)
    r = subprocess.run(s.argv("--metrics-listen", "127.0.0.1:%d" % port),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 69, r.stderr
    assert "cannot listen for metrics on 127.0.0.1:%d" % port in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert first.poll() is None
    assert scrape(port).status == 200
    stop_ok(s, first)


def test_metrics_listen_from_the_file(settle, redis_server):
    port = free_port()
    s = settle(["metrics_listen localhost:%d" % port])
    p = s.start()
    wait_for(lambda: port_answers(port), 10, what="metrics from the file")
    assert scrape(port).status == 200
    stop_ok(s, p)

    # the command line wins over the file, "off" included
    p = s.start("--metrics-listen", "off")
    write_usage(redis_server.client, "off", "s", "p")
    wait_drained(redis_server.client)
    assert not port_answers(port)
    stop_ok(s, p)


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as t:
            t.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_listener(settle):
    port = free_port()
    s = settle(["metrics_listen [::1]:%d" % port])
    p = s.start()
    wait_for(lambda: port_answers(port, "::1"), 10, what="[::1] listener")
    conn = http.client.HTTPConnection("::1", port, timeout=10)
    conn.request("GET", "/metrics")
    assert conn.getresponse().status == 200
    conn.close()
    stop_ok(s, p)


@pytest.mark.parametrize("value", [
    "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
    "127.0.0.1:99999999", "127.0.0.1:http", "127.0.0.1:+80", "127.0.0.1:-1",
    ":9465", "example.com:9465", "256.0.0.1:9465", "127.1:9465",
    "::1:9465", "[::1]9465", "[::1]:", "[127.0.0.1]:9465", "[::1:9465",
    "[fe80::1%eth0]:9465", "localhost", "on",
])
def test_bad_metrics_listen_in_the_file(tmp_path, value):
    conf = tmp_path / "settle.conf"
    conf.write_text("# metrics\n\nredis 127.0.0.1:1\nmetrics_listen %s\n"
                    % value)
    r = subprocess.run([settle_bin(), "-c", str(conf), "--ledger",
                        str(tmp_path / "l.db")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 78, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0] == ('toll-settle: %s:4: invalid metrics_listen "%s": use '
                        'IPV4:PORT, [IPV6]:PORT, localhost:PORT or off, port '
                        '1 to 65535' % (conf, value)), lines[0]
    assert not (tmp_path / "l.db").exists()


def test_metrics_listen_takes_one_value(tmp_path):
    conf = tmp_path / "settle.conf"
    conf.write_text("metrics_listen 127.0.0.1:9465 127.0.0.1:9466\n")
    r = subprocess.run([settle_bin(), "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 78
    assert '%s:1: "metrics_listen" takes one value' % conf in r.stderr


@pytest.mark.parametrize("value", ["9465", "localhost:0", "x:1", ""])
def test_bad_metrics_listen_on_the_command_line(value):
    r = subprocess.run([settle_bin(), "--metrics-listen", value],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 64, r.stderr
    assert r.stderr.startswith('toll-settle: invalid --metrics-listen "%s"'
                               % value), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_names_the_option():
    r = subprocess.run([settle_bin(), "--help"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "--metrics-listen ADDR:PORT" in r.stdout


def test_once_does_not_listen(settle, redis_server):
    """A --once run with the daemon's file is not scraped: it neither
    takes nor needs the port."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        s = settle(["metrics_listen 127.0.0.1:%d" % port])
        write_usage(redis_server.client, "once", "s", "p", calls=2)
        r = s.once()
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert ledger_usage(s.ledger)[("once", day(), "s")]["calls"] == 2
