"""toll-settle's webhooks (docs/settle.md, "Webhooks").

Events go straight into the ledger's events table (Python's sqlite3),
into a ledger that a first `toll-settle --once` on an empty Redis
created; then toll-settle runs against receivers started here, which
check each request on their own: the signature with Python's hmac, the
headers, the body byte for byte.  Times are lower bounds only, and every
wait is a poll with a deadline.
"""

import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import sqlite3
import threading
import time

import pytest

from helpers.httpd import QuietHandler, serve
from helpers.procs import wait_for
from helpers.settle import Settle, settle_bin, write_usage


SECRET = "whsec_test"
OTHER_SECRET = "whsec_other"

CREATED = "settlement.created"
COMPLETED = "settlement.completed"
FREE_TIER = "usage.free_tier_exhausted"

ATTEMPTS = 4                       # the first and three retries
RETRY_GAPS_S = (1.0, 2.0, 4.0)     # docs/settle.md
GAP_SLACK_S = 0.1                  # clocks of two processes, rounding
CLOCK_SKEW_MAX_S = 60              # a receiver's tolerance for t

# a sanitizer build prints these on stderr when something is wrong
SANITIZER_MARKS = ("Sanitizer", "runtime error:", "LeakSanitizer")


# --------------------------------------------------------------- receiver


class Request:
    def __init__(self, path, headers, body):
        self.at = time.monotonic()
        self.wall = time.time()
        self.path = path
        self.headers = headers
        self.body = body


class Receiver:
    """An HTTP server on a free loopback port.  plan(n, request) gives the
    answer to the n-th request (from 1) of an event id: a status code, or
    "hang" to never answer (until close())."""

    def __init__(self, plan=lambda n, req: 200):
        self.plan = plan
        self.requests = []
        self.hanging = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                req = Request(self.path, dict(self.headers.items()), body)
                with receiver.lock:
                    receiver.requests.append(req)
                    eid = req.headers.get("X-Toll-Event-Id")
                    nth = sum(1 for r in receiver.requests
                              if r.headers.get("X-Toll-Event-Id") == eid)
                answer = receiver.plan(nth, req)
                if answer == "hang":
                    with receiver.lock:
                        receiver.hanging += 1
                    receiver.release.wait(120)
                    with receiver.lock:
                        receiver.hanging -= 1
                    self.close_connection = True
                    return
                self.send_response(answer)
                if 300 <= answer < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server, self.thread = serve(Handler)
        self.port = self.server.server_address[1]

    def url(self, path="/hook"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def got(self, event_id=None, path=None):
        with self.lock:
            return [r for r in self.requests
                    if (event_id is None
                        or r.headers.get("X-Toll-Event-Id") == event_id)
                    and (path is None or r.path == path)]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made = []

    def make(plan=lambda n, req: 200):
        r = Receiver(plan)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def signature_ok(secret, headers, body):
    """The receiver's check of docs/settle.md, independent of toll."""
    header = headers.get("X-Toll-Signature", "")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if set(parts) != {"t", "v1"}:
        return False
    expect = hmac.new(secret.encode(), ("%s." % parts["t"]).encode() + body,
                      hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts["v1"], expect)


def signature_t(headers):
    header = headers["X-Toll-Signature"]
    return int(dict(p.split("=", 1) for p in header.split(","))["t"])


# --------------------------------------------------------------- ledger


@pytest.fixture
def ledger(tmp_path, redis_server):
    """A ledger made by toll-settle itself: one --once on an empty Redis,
    no webhooks configured."""
    if not os.path.exists(settle_bin()):
        pytest.fail("%s is not built (make settle)" % settle_bin(),
                    pytrace=False)
    path = tmp_path / "ledger.db"
    s = Settle(redis_server, path)
    p = s.once()
    assert p.returncode == 0, p.stderr
    assert path.exists()
    return path


@pytest.fixture
def settle(tmp_path, redis_server, ledger):
    """settle(conf_lines) -> Settle on the test's Redis and ledger."""
    made = []

    def make(conf_lines):
        s = Settle(redis_server, ledger, conf_lines, workdir=str(tmp_path))
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def hook_line(url, events, secret=SECRET):
    return "webhook %s events=%s secret=%s" % (url, ",".join(events), secret)


def add_event(ledger, etype, data=None):
    """An event as the ledger writes one: {"id", "type", "created",
    "data"}, compact JSON.  Returns (seq, id, body as stored)."""
    eid = "evt_" + secrets.token_hex(12)
    body = json.dumps({"id": eid, "type": etype, "created": int(time.time()),
                       "data": data or {"n": secrets.randbelow(1000)}},
                      separators=(",", ":"))
    db = sqlite3.connect(str(ledger), timeout=30)
    try:
        with db:
            cur = db.execute("INSERT INTO events (id, type, created_at, body)"
                             " VALUES (?, ?, ?, ?)",
                             (eid, etype, int(time.time()), body))
        return cur.lastrowid, eid, body
    finally:
        db.close()


def query(ledger, sql, args=()):
    db = sqlite3.connect("file:%s?mode=ro" % ledger, uri=True, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def deliveries(ledger, event_seq=None):
    """{url: row} of one event's deliveries, or [rows] of all."""
    cols = ("id", "event_seq", "url", "status", "attempts", "next_at_ms",
            "last_status", "last_error", "delivered_at")
    rows = [dict(zip(cols, r)) for r in query(
        ledger, "SELECT %s FROM deliveries ORDER BY id" % ", ".join(cols))]
    if event_seq is None:
        return rows
    return {r["url"]: r for r in rows if r["event_seq"] == event_seq}


def assert_clean(stderr):
    for mark in SANITIZER_MARKS:
        assert mark not in stderr, stderr


def assert_once_ok(p):
    assert p.returncode == 0, "exit %d:\n%s" % (p.returncode, p.stderr)
    assert_clean(p.stderr)


def free_closed_port():
    """A loopback port nobody listens on (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------- tests


def test_delivery_signed_and_exact(ledger, settle, receivers):
    """Each subscribed event is POSTed once, body as stored, with the
    headers of docs/settle.md and a signature a receiver can check with
    hmac; --once waits for it; a second run sends nothing again."""
    rx = receivers()
    s = settle([hook_line(rx.url(), [CREATED, COMPLETED]),
                "webhook_timeout 2s"])
    events = [add_event(ledger, CREATED, {"settlement": "stl_1"}),
              add_event(ledger, COMPLETED, {"settlement": "stl_1"})]

    started = time.time()
    assert_once_ok(s.once())

    got = rx.got()
    assert len(got) == 2, [r.headers for r in got]
    by_id = {r.headers["X-Toll-Event-Id"]: r for r in got}
    for seq, eid, body in events:
        req = by_id[eid]
        etype = json.loads(body)["type"]
        assert req.path == "/hook"
        assert req.body == body.encode()
        assert req.headers["Content-Type"] == "application/json"
        assert req.headers["X-Toll-Event"] == etype
        assert req.headers["User-Agent"] == "toll-settle"
        assert signature_ok(SECRET, req.headers, req.body), req.headers
        t = signature_t(req.headers)
        assert started - CLOCK_SKEW_MAX_S <= t <= time.time() + 1

        row = deliveries(ledger, seq)[rx.url()]
        assert row["status"] == "delivered"
        assert row["attempts"] == 1
        assert row["last_status"] == 200
        assert row["last_error"] is None
        assert row["delivered_at"] is not None

    assert query(ledger, "SELECT value FROM meta WHERE name ="
                 " 'webhook_cursor'") == [(str(events[-1][0]),)]

    # delivered is final: a new run sends nothing twice
    assert_once_ok(s.once())
    assert len(rx.got()) == 2
    assert len(deliveries(ledger)) == 2


def test_wrong_secret_fails_verification(ledger, settle, receivers):
    """Each subscription signs with its own secret: a receiver that checks
    with another secret, or a body changed on the way, sees a mismatch."""
    rx_a = receivers()
    rx_b = receivers()
    s = settle([hook_line(rx_a.url(), [CREATED], SECRET),
                hook_line(rx_b.url(), [CREATED], OTHER_SECRET)])
    _seq, eid, body = add_event(ledger, CREATED)

    assert_once_ok(s.once())

    (a,) = rx_a.got(eid)
    (b,) = rx_b.got(eid)
    assert a.body == b.body == body.encode()

    assert signature_ok(SECRET, a.headers, a.body)
    assert not signature_ok(OTHER_SECRET, a.headers, a.body)
    assert not signature_ok("whsec_wrong", a.headers, a.body)

    assert signature_ok(OTHER_SECRET, b.headers, b.body)
    assert not signature_ok(SECRET, b.headers, b.body)

    # the signature covers the body and t
    assert not signature_ok(SECRET, a.headers, a.body + b" ")
    forged = dict(a.headers)
    forged["X-Toll-Signature"] = forged["X-Toll-Signature"].replace(
        "t=%d" % signature_t(a.headers), "t=%d" % (signature_t(a.headers) + 1))
    assert not signature_ok(SECRET, forged, a.body)


def test_retries_until_delivered(ledger, settle, receivers):
    """500, 500, then 200: delivered at attempt 3, after waits of 1 s and
    2 s, with the same event id, body and a fresh valid signature each
    time."""
    rx = receivers(lambda n, req: 500 if n <= 2 else 200)
    s = settle([hook_line(rx.url(), [CREATED]), "webhook_timeout 2s"])
    seq, eid, body = add_event(ledger, CREATED)

    assert_once_ok(s.once())

    got = rx.got()
    assert len(got) == 3
    assert {r.headers["X-Toll-Event-Id"] for r in got} == {eid}
    assert {r.headers["X-Toll-Event"] for r in got} == {CREATED}
    assert {r.body for r in got} == {body.encode()}
    for r in got:
        assert signature_ok(SECRET, r.headers, r.body)

    gaps = [b.at - a.at for a, b in zip(got, got[1:])]
    assert gaps[0] >= RETRY_GAPS_S[0] - GAP_SLACK_S, gaps
    assert gaps[1] >= RETRY_GAPS_S[1] - GAP_SLACK_S, gaps
    # t is the time of each attempt, not of the first
    assert signature_t(got[2].headers) >= signature_t(got[0].headers) + 2

    row = deliveries(ledger, seq)[rx.url()]
    assert row["status"] == "delivered"
    assert row["attempts"] == 3
    assert row["last_status"] == 200


def test_failing_receivers_end_failed(ledger, settle, receivers):
    """A receiver that always answers 500, one that redirects (not
    followed) and a port that refuses: 4 attempts each, 1 s, 2 s and 4 s
    apart, then status failed with the last status and error; one line
    on stderr per failed delivery, without the secret."""
    rx_500 = receivers(lambda n, req: 500)
    rx_302 = receivers(lambda n, req: 302 if req.path == "/hook" else 200)
    refused = "http://127.0.0.1:%d/hook" % free_closed_port()
    s = settle([hook_line(rx_500.url(), [CREATED]),
                hook_line(rx_302.url(), [CREATED]),
                hook_line(refused, [CREATED]),
                "webhook_timeout 2s"])
    seq, eid, _body = add_event(ledger, CREATED)

    p = s.once()
    assert_once_ok(p)

    for rx in (rx_500, rx_302):
        got = rx.got(eid, path="/hook")
        assert len(got) == ATTEMPTS
        gaps = [b.at - a.at for a, b in zip(got, got[1:])]
        for gap, expect in zip(gaps, RETRY_GAPS_S):
            assert gap >= expect - GAP_SLACK_S, gaps
    assert rx_302.got(path="/elsewhere") == []

    rows = deliveries(ledger, seq)
    assert set(rows) == {rx_500.url(), rx_302.url(), refused}
    for url, row in rows.items():
        assert row["status"] == "failed", row
        assert row["attempts"] == ATTEMPTS, row
        assert row["last_error"], row
        assert row["delivered_at"] is None
    assert rows[rx_500.url()]["last_status"] == 500
    assert rows[rx_302.url()]["last_status"] == 302
    assert rows[refused]["last_status"] is None

    failed_lines = [ln for ln in p.stderr.splitlines()
                    if eid in ln and "fail" in ln]
    assert len(failed_lines) == 3, p.stderr
    for ln in failed_lines:
        assert ln.startswith("toll-settle: ")
    assert SECRET not in p.stderr

    # failed is final too
    assert_once_ok(s.once())
    assert len(rx_500.got()) == ATTEMPTS


def test_unsubscribed_events_not_delivered(ledger, settle, receivers):
    """Only the types a subscription names reach it; the others are
    passed over (no delivery row) and the cursor moves past them."""
    rx_created = receivers()
    rx_free = receivers()
    s = settle([hook_line(rx_created.url(), [CREATED]),
                hook_line(rx_free.url(), [FREE_TIER])])
    completed = add_event(ledger, COMPLETED)
    created = add_event(ledger, CREATED)
    free = add_event(ledger, FREE_TIER, {"buyer": "b1", "service": "svc"})
    unknown = add_event(ledger, "settlement.unknown")

    assert_once_ok(s.once())

    assert [r.headers["X-Toll-Event-Id"] for r in rx_created.got()] \
        == [created[1]]
    assert [r.headers["X-Toll-Event"] for r in rx_created.got()] == [CREATED]
    assert [r.headers["X-Toll-Event-Id"] for r in rx_free.got()] == [free[1]]
    assert [r.headers["X-Toll-Event"] for r in rx_free.got()] == [FREE_TIER]

    rows = deliveries(ledger)
    assert sorted((r["event_seq"], r["url"]) for r in rows) == sorted(
        [(created[0], rx_created.url()), (free[0], rx_free.url())])
    for seq in (completed[0], unknown[0]):
        assert deliveries(ledger, seq) == {}
    assert query(ledger, "SELECT value FROM meta WHERE name ="
                 " 'webhook_cursor'") == [(str(unknown[0]),)]


def test_hanging_receiver_does_not_stall(ledger, settle, receivers,
                                         redis_server):
    """While one receiver holds its request without answering, usage
    written to Redis still reaches the ledger within a few seconds, and
    another receiver still gets its events; SIGTERM then stops the daemon
    promptly with exit 0."""
    rx_hang = receivers(lambda n, req: "hang")
    rx_ok = receivers()
    s = settle([hook_line(rx_hang.url(), [CREATED]),
                hook_line(rx_ok.url(), [CREATED]),
                "webhook_timeout 10s"])
    first = add_event(ledger, CREATED)

    p = s.start(interval="100ms")
    try:
        wait_for(lambda: rx_hang.hanging >= 1, 10,
                 what="the hanging receiver's first request")

        # the other receiver is not held up by the one that hangs
        wait_for(lambda: rx_ok.got(first[1]), 5,
                 what="delivery to the healthy receiver")
        second = add_event(ledger, CREATED)
        wait_for(lambda: rx_ok.got(second[1]), 5,
                 what="a later event to the healthy receiver")

        # the drain goes on
        rec = write_usage(redis_server.client, "buyer-hang", "svc",
                          "prov-hang", calls=3, price_micros=50000)
        assert rec["amount_micros"] == 150000

        def in_ledger():
            (total,), = query(ledger, "SELECT coalesce(sum(amount_micros),"
                              " 0) FROM transactions")
            return total == rec["amount_micros"]

        wait_for(in_ledger, 5, interval=0.05, what="usage in the ledger")
        assert rx_hang.hanging >= 1, "the receiver stopped hanging"
        assert p.poll() is None, Settle.log_text(p)

        stop_at = time.monotonic()
        assert s.stop(p, signal.SIGTERM, timeout=15) == 0, Settle.log_text(p)
        assert time.monotonic() - stop_at < 10
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)

    log = Settle.log_text(p)
    assert_clean(log)
    assert SECRET not in log

    row = deliveries(ledger, first[0])[rx_ok.url()]
    assert row["status"] == "delivered"
    # an attempt cut short by the stop is not a failure
    assert deliveries(ledger, first[0])[rx_hang.url()]["status"] == "pending"
