"""Spend cap alerts (issue 15 item 5, docs/settle.md "Spend cap
alerts"): spend_cap.threshold as a signed webhook at 50, 80 and 100 % of
each cap (buyer or key, daily or monthly, per currency), once per
threshold per cap per period.

    1. the periods' used as the gate writes it, drained usage as the
       meter writes it, toll-settle --once: each threshold once, never
       again after more passes or a restart; 50 and 80 together; the full
       mark; keys; months with an anchor; a new day; no generation, no
       check; a daemon's many passes
    2. through nginx: caps set with tollctl, calls, passes; a price that
       does not divide the cap gives 100 % at the refusal; a key's cap;
       a new day re-arms (libfaketime)

Real Redis, real toll-settle (and nginx in 2), a webhook receiver here
that checks each signature with Python's hmac.
"""

import datetime
import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import threading

import pytest

from helpers import client
from helpers.caps import cap_key, period_used, set_cap, set_key_cap
from helpers.httpd import QuietHandler, serve
from helpers.keys import make_key
from helpers.meter import meter_http, meter_upstream, micros, proxy_to
from helpers.meter import upstream_block
from helpers.procs import wait_for
from helpers.settle import Settle, day, preload_env, tollctl_bin
from helpers.settle import write_usage

assert meter_upstream  # a fixture, used by name

SECRET = "whsec_caps"
EVENT = "spend_cap.threshold"
M = 1000000
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


# --------------------------------------------------------------- receiver


class Receiver:
    """Takes every POST, answers 200, keeps (headers, body)."""

    def __init__(self):
        self.got = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with receiver.lock:
                    receiver.got.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server, self.thread = serve(Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]

    def events(self):
        """The events received, each one's signature and headers
        checked, by period and threshold: deliveries of one pass may
        arrive in any order."""
        out = []
        with self.lock:
            got = list(self.got)
        for headers, body in got:
            assert signature_ok(headers, body), headers
            ev = json.loads(body)
            assert headers["X-Toll-Event"] == ev["type"] == EVENT
            assert headers["X-Toll-Event-Id"] == ev["id"]
            out.append(ev)
        return sorted(out, key=lambda e: (e["data"]["period_start"],
                                          e["data"]["threshold"]))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def signature_ok(headers, body):
    """docs/settle.md's receiver check, independent of toll."""
    parts = dict(p.split("=", 1)
                 for p in headers.get("X-Toll-Signature", "").split(","))
    want = hmac.new(SECRET.encode(), ("%s." % parts["t"]).encode() + body,
                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts.get("v1", ""), want)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def settle(redis_server, tmp_path, receiver):
    s = Settle(redis_server, tmp_path / "ledger.db", conf_lines=[
        "webhook %s events=%s secret=%s" % (receiver.url, EVENT, SECRET)])
    yield s
    s.close()


# ---------------------------------------------------------------- helpers


def once(settle):
    p = settle.once()
    assert p.returncode == 0, p.stderr
    return p


def used(rc, buyer, micros_, d=None, month=None, key=None, cur="USD",
         full=False):
    """What lua/cap.lua leaves in a period's hash: the day's (or the
    month's that starts on month), the buyer's field or a key's."""
    name = ("%s:m%s" % (cap_key(buyer), month) if month
            else "%s:d%s" % (cap_key(buyer), d or day()))
    prefix = ("key:%s:%s:" % (key, cur)) if key else (cur + ":")
    rc.hset(name, prefix + "used", str(micros_))
    if full:
        rc.hset(name, prefix + "full", "1")


def drained(rc, buyer, d=None):
    """A meter flush of the buyer's calls: the drain notes the buyer."""
    write_usage(rc, buyer, "svc", "prov", d=d, calls=1)


def seen(receiver, buyer=None):
    """(scope, key_id, period, period_start, threshold, used) received,
    in order."""
    return [(e["data"]["scope"], e["data"].get("key_id"),
             e["data"]["period"], e["data"]["period_start"],
             e["data"]["threshold"], e["data"]["used"])
            for e in receiver.events()
            if buyer is None or e["data"]["buyer"] == buyer]


def rows(settle):
    db = sqlite3.connect("file:%s?mode=ro" % settle.ledger, uri=True,
                         timeout=30)
    try:
        return db.execute("SELECT buyer, currency, scope, key_id, period,"
                          " period_start, threshold FROM cap_alerts"
                          " ORDER BY id").fetchall()
    finally:
        db.close()


def iso(d):
    return "%s-%s-%s" % (d[:4], d[4:6], d[6:])


# ============================================= 1. the ledger's side, once


def test_no_event_name_mistake(redis_server, tmp_path):
    """The event is one a subscription may name, and only that one."""
    s = Settle(redis_server, tmp_path / "ledger.db", conf_lines=[
        "webhook http://127.0.0.1:1/h events=spend_cap.thresholds "
        "secret=s"])
    p = s.once()
    assert p.returncode == 78, p.stderr
    assert 'unknown event "spend_cap.thresholds"' in p.stderr
    assert p.stderr.rstrip().endswith("or spend_cap.threshold"), p.stderr


def test_below_50_nothing(settle, redis_server, receiver):
    rc = redis_server.client
    set_cap(rc, "acme", daily=1 * M)
    used(rc, "acme", 499999)
    drained(rc, "acme")
    once(settle)
    assert seen(receiver) == []
    assert rows(settle) == []


def test_each_threshold_once(settle, redis_server, receiver):
    rc = redis_server.client
    today = day()
    set_cap(rc, "acme", daily=1 * M)

    used(rc, "acme", 500000)             # exactly 50 %
    drained(rc, "acme")
    once(settle)
    assert seen(receiver) == [("buyer", None, "daily", iso(today), 50,
                               "0.50")]
    ev = receiver.events()[0]
    data = ev["data"]
    assert data["buyer"] == "acme" and data["currency"] == "USD"
    assert data["cap"] == "1.00"
    assert data["period_end"] == iso(day(1))
    assert data["at"].endswith("Z") and ev["created"] > 0
    assert "key_id" not in data

    # more usage, more passes, below 80: nothing more
    used(rc, "acme", 799999)
    drained(rc, "acme")
    once(settle)
    once(settle)
    assert len(seen(receiver)) == 1

    used(rc, "acme", 800000)
    drained(rc, "acme")
    once(settle)
    used(rc, "acme", 1 * M)
    drained(rc, "acme")
    once(settle)
    drained(rc, "acme")
    once(settle)
    assert [t for *_, t, _ in seen(receiver)] == [50, 80, 100]
    assert len(rows(settle)) == 3

    # a restart (a new process, a new start) sends none again
    drained(rc, "acme")
    once(settle)
    assert [t for *_, t, _ in seen(receiver)] == [50, 80, 100]


def test_crossing_two_at_once(settle, redis_server, receiver):
    rc = redis_server.client
    set_cap(rc, "acme", monthly=10 * M)
    month = day()[:6] + "01"
    used(rc, "acme", 8500000, month=month)
    drained(rc, "acme")
    once(settle)
    assert seen(receiver) == [
        ("buyer", None, "monthly", iso(month), 50, "8.50"),
        ("buyer", None, "monthly", iso(month), 80, "8.50")]


def test_full_mark_is_100(settle, redis_server, receiver):
    """A cap that refused a call (0.90 of 1.00 used, a price of 0.30)."""
    rc = redis_server.client
    set_cap(rc, "acme", daily=1 * M)
    used(rc, "acme", 900000, full=True)
    drained(rc, "acme")
    once(settle)
    assert [t for *_, t, _ in seen(receiver)] == [50, 80, 100]
    assert receiver.events()[-1]["data"]["used"] == "0.90"


def test_keys_and_currencies_apart(settle, redis_server, receiver):
    rc = redis_server.client
    today = day()
    set_cap(rc, "acme", daily=10 * M)
    set_key_cap(rc, "acme", "tk_a", daily=1 * M)
    set_key_cap(rc, "acme", "tk_b", daily=1 * M)
    set_cap(rc, "acme", daily=2 * M, currency="EUR")
    used(rc, "acme", 1 * M)                         # buyer USD: 10 %
    used(rc, "acme", 600000, key="tk_a")            # tk_a: 60 %
    used(rc, "acme", 100000, key="tk_b")
    used(rc, "acme", 1600000, cur="EUR")            # EUR: 80 %
    drained(rc, "acme")
    once(settle)
    got = sorted((e["data"]["currency"],) + s
                 for e, s in zip(receiver.events(), seen(receiver)))
    assert got == [
        ("EUR", "buyer", None, "daily", iso(today), 50, "1.60"),
        ("EUR", "buyer", None, "daily", iso(today), 80, "1.60"),
        ("USD", "key", "tk_a", "daily", iso(today), 50, "0.60")]


def test_month_with_anchor(settle, redis_server, receiver):
    rc = redis_server.client
    set_cap(rc, "acme", monthly=1 * M, anchor=15)
    # usage of March 14 belongs to the month that started February 15
    used(rc, "acme", 1 * M, month="20260215")
    drained(rc, "acme", d="20260314")
    once(settle)
    evs = receiver.events()
    assert [e["data"]["threshold"] for e in evs] == [50, 80, 100]
    assert {(e["data"]["period_start"], e["data"]["period_end"])
            for e in evs} == {("2026-02-15", "2026-03-15")}


def test_new_day_rearms(settle, redis_server, receiver):
    rc = redis_server.client
    set_cap(rc, "acme", daily=1 * M)
    used(rc, "acme", 1 * M, d="20261231")
    drained(rc, "acme", d="20261231")
    once(settle)
    used(rc, "acme", 500000, d="20270101")
    drained(rc, "acme", d="20270101")
    once(settle)
    assert [(s[3], s[4]) for s in seen(receiver)] == [
        ("2026-12-31", 50), ("2026-12-31", 80), ("2026-12-31", 100),
        ("2027-01-01", 50)]
    assert receiver.events()[2]["data"]["period_end"] == "2027-01-01"


def test_no_caps_no_check(settle, redis_server, receiver):
    """A generation of 0 (no cap ever set): not even the caps' hash is
    read, so what it holds sends nothing."""
    rc = redis_server.client
    rc.hset(cap_key("acme"), "USD:daily", str(1 * M))
    used(rc, "acme", 1 * M)
    drained(rc, "acme")
    once(settle)
    assert seen(receiver) == []
    rc.incr("toll:cap:gen")
    drained(rc, "acme")
    once(settle)
    assert len(seen(receiver)) == 3


def test_huge_cap_no_overflow(settle, redis_server, receiver):
    rc = redis_server.client
    big = 2 ** 63 - 1
    set_cap(rc, "acme", daily=big)
    used(rc, "acme", big // 2)                      # just below 50 %
    drained(rc, "acme")
    once(settle)
    assert seen(receiver) == []
    used(rc, "acme", big // 2 + 1)
    drained(rc, "acme")
    once(settle)
    assert [t for *_, t, _ in seen(receiver)] == [50]


def test_crash_after_drain_recovered(settle, redis_server, receiver):
    """A run killed after its batch's delete, before its alerts: the next
    start finds the day in the ledger's last transactions."""
    rc = redis_server.client
    set_cap(rc, "acme", daily=1 * M)
    used(rc, "acme", 800000)
    drained(rc, "acme")
    p = settle.once(env={"TOLL_SETTLE_CRASH": "moved"})
    assert p.returncode == -9, p.stderr
    assert seen(receiver) == []
    once(settle)
    assert [t for *_, t, _ in seen(receiver)] == [50, 80]


def test_bad_fields_left_out(settle, redis_server, receiver):
    rc = redis_server.client
    set_cap(rc, "acme", daily=1 * M)
    rc.hset(cap_key("acme"), mapping={
        "usd:daily": "1", "USD:weekly": "1", "key::USD:daily": "1",
        "key:a b:USD:daily": "1", "EUR:daily": "-5", "GBP:daily": "x",
        "anchor": "99"})
    used(rc, "acme", 1 * M)
    drained(rc, "acme")
    once(settle)
    assert [(s[0], s[4]) for s in seen(receiver)] == [
        ("buyer", 50), ("buyer", 80), ("buyer", 100)]


def test_daemon_once(redis_server, tmp_path, receiver):
    """A running daemon, a pass every 100 ms, the buyer's usage drained
    again and again: each threshold once."""
    rc = redis_server.client
    s = Settle(redis_server, tmp_path / "ledger.db", conf_lines=[
        "webhook %s events=%s secret=%s" % (receiver.url, EVENT, SECRET)])
    try:
        p = s.start()
        set_cap(rc, "acme", daily=1 * M)
        set_key_cap(rc, "acme", "tk_a", monthly=1 * M)
        used(rc, "acme", 1 * M)
        used(rc, "acme", 500000, key="tk_a", month=day()[:6] + "01")
        for _ in range(5):
            drained(rc, "acme")
            wait_for(lambda: not rc.exists("toll:usage:{acme}:" + day()),
                     10, interval=0.05, what="the drain")
        wait_for(lambda: len(receiver.events()) >= 4, 20,
                 what="four alerts")
        for _ in range(3):
            drained(rc, "acme")
            wait_for(lambda: not rc.exists("toll:usage:{acme}:" + day()),
                     10, interval=0.05, what="the drain")
        assert s.stop(p) == 0
        assert sorted((e["data"]["scope"], e["data"]["threshold"])
                      for e in receiver.events()) == [
            ("buyer", 50), ("buyer", 80), ("buyer", 100), ("key", 50)]
    finally:
        s.close()


# ================================================= 2. through nginx


LOCATIONS = """
        location /paid/ {
            toll on;
            toll_service paid provider=acme price=0.05;
            %(proxy)s
        }
        location /dear/ {
            toll on;
            toll_service dear provider=acme price=0.30;
            %(proxy)s
        }
""" % {"proxy": proxy_to("meterapi")}


def start(start_nginx, up, extra=""):
    return start_nginx(http_extra=meter_http() + extra
                       + "    toll_prepaid_idle 200ms;\n"
                       + upstream_block("meterapi", up.port),
                       locations=LOCATIONS)


def call(ngx, key, path="/paid/x"):
    return client.request(ngx.port, path=path, headers=[key.bearer()])


def tollctl(redis, *args):
    p = subprocess.run([tollctl_bin(), "--redis", redis.address]
                       + list(args), env=preload_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p


def settled(rc, buyer, spent, key=None, d=None):
    """The nodes gave their idle leases back: used is what was charged
    (a pass then sees what the buyer spent, not a lease)."""
    wait_for(lambda: period_used(rc, buyer, key=key, day=d) == spent, 15,
             interval=0.1, what="the caps' leases to settle")


def flushed(rc, buyer, calls, d=None):
    def n():
        v = rc.hgetall("toll:usage:{%s}:%s" % (buyer, d or day()))
        return sum(int(x) for f, x in v.items() if f.endswith(":calls"))
    wait_for(lambda: n() >= calls, 15, interval=0.1, what="the meter")


def test_through_nginx(start_nginx, meter_upstream, redis_server, settle,
                       receiver):
    rc = redis_server.client
    k = make_key(redis_server, owner="gate")
    # before nginx starts: a node that knows no cap skips caps for a second
    tollctl(redis_server, "buyer", "set-cap", "gate", "--daily", "1.00")
    ngx = start(start_nginx, meter_upstream)
    for _ in range(9):                               # 0.45
        assert call(ngx, k).status == 200
    flushed(rc, "gate", 9)
    settled(rc, "gate", micros("0.45"))
    once(settle)
    assert seen(receiver) == []

    for _ in range(7):                               # 0.80
        assert call(ngx, k).status == 200
    flushed(rc, "gate", 7)
    settled(rc, "gate", micros("0.80"))
    once(settle)
    once(settle)
    assert [t for *_, t, _ in seen(receiver)] == [50, 80]

    got = [call(ngx, k).status for _ in range(5)]
    assert got == [200] * 4 + [402], got
    flushed(rc, "gate", 4)
    once(settle)
    evs = receiver.events()
    assert [e["data"]["threshold"] for e in evs] == [50, 80, 100]
    assert evs[2]["data"]["used"] == "1.00"
    assert evs[2]["data"]["cap"] == "1.00"
    # more refusals, passes and a restart: nothing more
    assert call(ngx, k).status == 402
    once(settle)
    once(settle)
    assert len(receiver.events()) == 3


def test_price_not_dividing_cap(start_nginx, meter_upstream, redis_server,
                                settle, receiver):
    """1.00 at 0.30 a call: three pass (0.90), the fourth is refused; the
    cap is full at 90 % used."""
    rc = redis_server.client
    k = make_key(redis_server, owner="dear")
    tollctl(redis_server, "buyer", "set-cap", "dear", "--daily", "1.00")
    ngx = start(start_nginx, meter_upstream)
    got = [call(ngx, k, "/dear/x").status for _ in range(4)]
    assert got == [200, 200, 200, 402], got
    assert rc.hget("%s:d%s" % (cap_key("dear"), day()), "USD:full") == "1"
    flushed(rc, "dear", 3)
    once(settle)
    evs = receiver.events()
    assert [e["data"]["threshold"] for e in evs] == [50, 80, 100]
    assert {e["data"]["used"] for e in evs} == {"0.90"}
    once(settle)
    assert len(receiver.events()) == 3


def test_key_cap_through_nginx(start_nginx, meter_upstream, redis_server,
                               settle, receiver):
    rc = redis_server.client
    p = tollctl(redis_server, "key", "create", "--owner", "kbuyer",
                "--spend-cap-monthly", "0.10")
    made = json.loads(p.stdout)
    ngx = start(start_nginx, meter_upstream)
    hdr = ("Authorization", "Bearer " + made["token"])
    got = [client.request(ngx.port, path="/paid/x", headers=[hdr]).status
           for _ in range(3)]
    assert got == [200, 200, 402], got
    flushed(rc, "kbuyer", 2)
    once(settle)
    evs = receiver.events()
    assert [e["data"]["threshold"] for e in evs] == [50, 80, 100]
    for e in evs:
        assert (e["data"]["scope"], e["data"]["key_id"],
                e["data"]["period"]) == ("key", made["key_id"], "monthly")
        assert e["data"]["period_start"].endswith("-01")


def faked(monkeypatch, when):
    """As t/test_caps.py: nginx on a clock that starts at when (UTC)."""
    if not os.path.exists(FAKETIME_LIB):
        pytest.skip("libfaketime is not installed (apt-get install "
                    "faketime)")
    if os.environ.get("TOLL_PRELOAD"):
        pytest.skip("libfaketime cannot be preloaded with the sanitizer "
                    "runtimes")
    monkeypatch.setenv("LD_PRELOAD", FAKETIME_LIB)
    monkeypatch.setenv("FAKETIME", "@" + when.strftime("%Y-%m-%d %H:%M:%S"))
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("DONT_FAKE_MONOTONIC", "1")
    monkeypatch.setenv("FAKETIME_DONT_RESET", "1")


def test_new_day_rearms_through_nginx(start_nginx, meter_upstream,
                                      redis_server, settle, receiver,
                                      monkeypatch):
    rc = redis_server.client
    k = make_key(redis_server, owner="midnight")
    set_cap(rc, "midnight", daily=micros("0.10"))
    faked(monkeypatch, datetime.datetime(2026, 3, 9, 23, 59, 55))
    ngx = start(start_nginx, meter_upstream)
    monkeypatch.delenv("LD_PRELOAD")
    got = [call(ngx, k).status for _ in range(3)]
    assert got == [200, 200, 402], got
    flushed(rc, "midnight", 2, d="20260309")
    once(settle)
    assert [(s[3], s[4]) for s in seen(receiver)] == [
        ("2026-03-09", 50), ("2026-03-09", 80), ("2026-03-09", 100)]

    wait_for(lambda: call(ngx, k).status == 200, 10, interval=0.2,
             what="the next day")
    flushed(rc, "midnight", 1, d="20260310")
    once(settle)
    assert [(s[3], s[4]) for s in seen(receiver)][3:] == [
        ("2026-03-10", 50)]
    assert call(ngx, k).status == 200
    flushed(rc, "midnight", 1, d="20260310")
    once(settle)
    once(settle)
    assert [(s[3], s[4]) for s in seen(receiver)][3:] == [
        ("2026-03-10", 50), ("2026-03-10", 80), ("2026-03-10", 100)]
