"""Plugins (lua-free-plugins/): loading and checking at nginx -t, the
hooks at request time, and the three plugins of the folder.

    1. nginx -t: every refusal of toll_plugin_load and toll_plugin (no
       file, no entry, a wrong ABI version, a short descriptor, an unknown
       name, a bad argument), each an [emerg] at the directive's line
    2. the hooks: access after toll's gate (the buyer is known), headers,
       the body streamed with its last piece, log; a plugin on a location
       without toll; a hook that fails; a reload that changes arguments
    3. request_guard and batch_ops refuse with toll's problem answer, and
       the call never reaches the upstream
    4. units: batch_ops and llm_usage report them (JSON, an event stream
       cut at every byte, a body nginx buffered to a file); a location
       without toll ignores them.  What the units cost is the pricing's
       (issue 16, parts 1 and 2); here the report is read from the debug
       log line "toll plugin "NAME": units N kept|ignored".
"""

import json
import os
import re
import socket
import subprocess
import time

import pytest

from helpers import client
from helpers.keys import build_dir, raw_key
from helpers.meter import meter_http, usage, wait_usage
from helpers.settle import Settle, connect, ledger_check, wait_drained
from helpers.llm_upstream import LlmUpstream, sse_body
from helpers.procs import PROXY, free_port, wait_for


MARK = "# <-- under test"

UNITS_RE = re.compile(r'toll plugin "(\w+)": units (\d+) (kept|ignored)')

PROBLEM_KEYS = {"type", "title", "status", "code", "detail", "request_id"}


def plugin(name):
    return os.path.join(os.path.abspath(build_dir()), "plugins",
                        "toll_%s.so" % name)


def test_plugin(name):
    return os.path.join(os.path.abspath(build_dir()), "plugins", "test",
                        "%s.so" % name)


# the test plugins are not tests
test_plugin.__test__ = False


LOADS = """
    toll_plugin_load llm_usage %s;
    toll_plugin_load batch_ops %s;
    toll_plugin_load request_guard %s;
    toll_plugin_load echo %s;
""" % (plugin("llm_usage"), plugin("batch_ops"), plugin("request_guard"),
       test_plugin("echo"))


@pytest.fixture
def llm():
    u = LlmUpstream()
    yield u
    u.close()


# ------------------------------------------------------------ nginx -t


def http_block(extra="", location=""):
    return """
    toll_redis 127.0.0.1:%d timeout=500ms;
    toll_zone 10m;
    %s
    server {
        listen 127.0.0.1:%d;
        location / {
            %s
            return 200;
        }
    }
""" % (free_port(), extra, free_port(), location)


def assert_refused(rc, out, text, *must_mention):
    assert rc != 0, "nginx -t accepted a bad config:\n%s\n%s" % (text, out)
    errors = [l for l in out.splitlines() if "[emerg]" in l]
    assert len(errors) == 1, out
    for m in must_mention:
        assert m in errors[0], "%r not in %r" % (m, errors[0])
    line = [i for i, l in enumerate(text.splitlines(), 1) if MARK in l][0]
    assert re.search(r"nginx\.conf:%d\b" % line, errors[0]), errors[0]
    assert "test failed" in out, out


LOAD_REFUSALS = [
    ("no file", "toll_plugin_load x /nonexistent/toll_x.so;",
     ['dlopen() "/nonexistent/toll_x.so" failed']),
    ("no entry", "toll_plugin_load x %s;" % test_plugin("no_entry"),
     ['plugin "x" in "%s" has no "toll_plugin_entry" symbol'
      % test_plugin("no_entry")]),
    ("wrong ABI", "toll_plugin_load x %s;" % test_plugin("bad_abi"),
     ["has ABI version 99, this module has version 1",
      "rebuild the plugin"]),
    ("short descriptor", "toll_plugin_load x %s;"
     % test_plugin("short_size"),
     ["has a descriptor of 8 bytes, ABI version 1 needs at least"]),
    ("bad name", "toll_plugin_load X-1 %s;" % plugin("llm_usage"),
     ['invalid plugin name "X-1"']),
]


@pytest.mark.parametrize("case", LOAD_REFUSALS, ids=lambda c: c[0])
def test_load_refused(nginx_t, case):
    _, directive, mentions = case
    text = http_block(extra=directive + " " + MARK)
    rc, out, text = nginx_t(text)
    assert_refused(rc, out, text, *mentions)


def test_load_twice_refused(nginx_t):
    text = http_block(extra="toll_plugin_load x %s;\n    "
                      "toll_plugin_load x %s; %s"
                      % (plugin("llm_usage"), plugin("batch_ops"), MARK))
    rc, out, text = nginx_t(text)
    assert_refused(rc, out, text, 'duplicate plugin "x"')


def test_load_only_at_http_level(nginx_t):
    text = http_block(location="toll_plugin_load x %s; %s"
                      % (plugin("llm_usage"), MARK))
    rc, out, text = nginx_t(text)
    assert_refused(rc, out, text,
                   '"toll_plugin_load" directive is not allowed here')


USE_REFUSALS = [
    ("unknown plugin", "toll_plugin nope;",
     ['unknown plugin "nope": load it first with "toll_plugin_load"']),
    ("not key=value", "toll_plugin llm_usage total_tokens;",
     ['invalid argument "total_tokens" of plugin "llm_usage": key=value '
      'expected']),
    ("empty key", "toll_plugin llm_usage =x;",
     ['invalid argument "=x"']),
    ("llm_usage unknown argument", "toll_plugin llm_usage paht=a.b;",
     ['plugin "llm_usage": unknown argument "paht"']),
    ("llm_usage bad path", "toll_plugin llm_usage path=usage..total;",
     ['plugin "llm_usage": invalid path "usage..total"']),
    ("llm_usage both off", "toll_plugin llm_usage json=off sse=off;",
     ['plugin "llm_usage": "json" and "sse" are both off']),
    ("llm_usage bad flag", "toll_plugin llm_usage sse=yes;",
     ['plugin "llm_usage": "sse" must be "on" or "off"']),
    ("batch_ops bad max", "toll_plugin batch_ops max=0;",
     ['plugin "batch_ops": invalid max "0"']),
    ("batch_ops unknown", "toll_plugin batch_ops maximum=3;",
     ['plugin "batch_ops": invalid argument "maximum=3"']),
    ("request_guard no rule", "toll_plugin request_guard;",
     ['plugin "request_guard": no rule']),
    ("request_guard bad size", "toll_plugin request_guard max_body=1g;",
     ['plugin "request_guard": invalid max_body "1g"']),
    ("echo needs value", "toll_plugin echo units=3;",
     ['plugin "echo": "value" is required']),
]


@pytest.mark.parametrize("case", USE_REFUSALS, ids=lambda c: c[0])
def test_use_refused(nginx_t, case):
    _, directive, mentions = case
    text = http_block(extra=LOADS,
                      location="toll on;\n            %s %s"
                      % (directive, MARK))
    rc, out, text = nginx_t(text)
    assert_refused(rc, out, text, *mentions)


def test_use_before_load_refused(nginx_t):
    # the name must be known when toll_plugin is read
    text = http_block(extra="toll_plugin echo value=a; %s\n    "
                      "toll_plugin_load echo %s;"
                      % (MARK, test_plugin("echo")))
    rc, out, text = nginx_t(text)
    assert_refused(rc, out, text, 'unknown plugin "echo"')


def test_good_config_passes(nginx_t):
    text = http_block(extra=LOADS + "    toll_plugin echo value=top;\n",
                      location="""toll on;
            toll_plugin llm_usage path=metadata.total_tokens sse=off;
            toll_plugin batch_ops header=X-Ops arg=ops max=50 required=off;
            toll_plugin request_guard methods=GET,POST max_body=64k
                content_type=application/json require_header=X-A
                require_header=X-B;""")
    rc, out, _ = nginx_t(text)
    assert rc == 0, out
    assert "test is successful" in out, out


# ------------------------------------------------------------ the hooks


def start(start_nginx, llm, locations, level="info", http_extra=""):
    up = ("    upstream llm {\n        server 127.0.0.1:%d;\n"
          "        keepalive 8;\n    }\n" % llm.port)
    return start_nginx(http_extra=LOADS + up + meter_http() + http_extra,
                       locations=locations + """
        location = /ping {
            return 200 "pong\\n";
        }
""", error_log_level=level)


LLM = ('proxy_pass http://llm; proxy_http_version 1.1; '
       'proxy_set_header Connection "";')


# every priced service here charges for units, which only plugins report
UNIT_PRICE = "0.0001"           # 100 micro-units a unit
MAX_UNITS = 1000000


def loc(path, body, gated=True, service=None, proxy=LLM):
    svc = ("toll_service %s provider=acme price=0.01 unit_price=%s "
           "max_units=%d;" % (service, UNIT_PRICE, MAX_UNITS)
           if service else "")
    return """
        location %s {
            %s
            %s
            %s
            %s
        }
""" % (path, "toll on;" if gated else "", svc, body, proxy)


def charged(calls, units):
    """What calls at the base price of 0.01 and units at UNIT_PRICE cost,
    in micro-units (100 a unit: no rounding here)."""
    return calls * 10000 + units * 100


def wait_charged(redis_server, buyer, service, calls, units):
    """The meter has the calls, their units and their amounts, exactly."""
    wait_usage(redis_server.client, {(buyer, service): {
        "calls": calls, "units": units,
        "amount_micros": charged(calls, units)}},
        fields=("calls", "units", "amount_micros"))


def units_lines(ngx):
    return [(m.group(1), int(m.group(2)), m.group(3))
            for m in UNITS_RE.finditer(ngx.error_log_text())]


def wait_log(ngx, pattern, count=1, timeout=5):
    rx = re.compile(pattern)
    wait_for(lambda: len(rx.findall(ngx.error_log_text())) >= count,
             timeout, what="%d log lines %r" % (count, pattern))
    return rx.findall(ngx.error_log_text())


def test_hooks_without_toll(start_nginx, llm):
    """A plugin on a location without toll: every hook runs, identity()
    has nobody, reported units are ignored."""
    ngx = start(start_nginx, llm, loc("/open/", "toll_plugin echo "
                                      "value=a units=5;", gated=False),
                level="debug")
    r = client.request(ngx.port, path="/open/plain")
    assert r.status == 200 and r.body == b"hello world", r
    assert r.header_all("x-plugin-echo") == ["a"], r.headers
    assert r.header("x-plugin-access") == "yes", r.headers
    assert r.header("x-plugin-buyer") is None, r.headers
    lines = wait_log(ngx, r'echo a: (\d+) body bytes, last=(\d), '
                     r'status=(\d+)')
    assert lines == [("11", "1", "200")], lines
    assert units_lines(ngx) == [("echo", 5, "ignored")]
    assert "hook failed" not in ngx.error_log_text()


def test_hooks_after_the_gate(start_nginx, redis_server, llm):
    """The access hook runs after toll's gate: a refused call never
    reaches it, a passed one shows its buyer and service."""
    key = raw_key(redis_server, owner="buyer-7")
    ngx = start(start_nginx, llm, loc("/api/", "toll_plugin echo value=b;",
                                      service="chat"))
    r = client.request(ngx.port, path="/api/plain")
    assert r.status == 401, r
    assert r.header("x-plugin-echo") is None, r.headers
    assert llm.count == 0

    r = client.request(ngx.port, path="/api/plain", headers=[key.bearer()])
    assert r.status == 200, (r, r.body)
    assert r.header("x-plugin-echo") == "b", r.headers
    assert r.header("x-plugin-access") == "yes", r.headers
    assert r.header("x-plugin-buyer") == "buyer-7", r.headers
    assert r.header("x-plugin-service") == "chat", r.headers
    # the refused request's log hook did not run: the plugin never saw it
    lines = wait_log(ngx, r"echo b: \d+ body bytes")
    assert len(lines) == 1, lines


@pytest.mark.parametrize("hook", ["headers", "body"])
def test_failing_filter_hook(start_nginx, llm, hook):
    """A headers or body hook that fails: logged once, the plugin sees no
    more of the request, the answer is whole."""
    ngx = start(start_nginx, llm, loc("/open/", "toll_plugin echo value=c "
                                      "fail=%s;" % hook, gated=False))
    for _ in range(2):
        r = client.request(ngx.port, path="/open/plain")
        assert r.status == 200 and r.body == b"hello world", r
    lines = wait_log(ngx, r'\[error\].*toll plugin "echo": %s hook failed'
                     % hook, count=2)
    assert len(lines) == 2, lines


def test_failing_access_hook(start_nginx, llm):
    ngx = start(start_nginx, llm, loc("/open/", "toll_plugin echo value=d "
                                      "fail=access;", gated=False))
    r = client.request(ngx.port, path="/open/plain")
    assert r.status == 500, r
    assert llm.count == 0
    wait_log(ngx, r'toll plugin "echo": access hook failed')


def test_lists_inherit_as_nginx_lists(start_nginx, llm):
    """A level with its own toll_plugin lines has only those; one without
    inherits the enclosing level's."""
    ngx = start(start_nginx, llm, """
        toll_plugin echo value=server;
        location /inherit/ {
            %s
        }
        location /own/ {
            toll_plugin echo value=own;
            %s
        }
""" % (LLM, LLM))
    r = client.request(ngx.port, path="/inherit/plain")
    assert r.header_all("x-plugin-echo") == ["server"], r.headers
    r = client.request(ngx.port, path="/own/plain")
    assert r.header_all("x-plugin-echo") == ["own"], r.headers


@pytest.mark.allow_log(r'\[emerg\].*plugin "echo": unknown argument')
def test_reload_changes_arguments(start_nginx, llm):
    ngx = start(start_nginx, llm, loc("/open/", "toll_plugin echo "
                                      "value=before;", gated=False))
    r = client.request(ngx.port, path="/open/plain")
    assert r.header("x-plugin-echo") == "before", r.headers

    ngx.write_conf(ngx.conf_text.replace("value=before", "value=after"))
    ngx.reload(wait_old_exit=True)

    for _ in range(4):
        r = client.request(ngx.port, path="/open/plain")
        assert r.status == 200, r
        assert r.header("x-plugin-echo") == "after", r.headers

    # a reload that breaks the arguments is refused; the workers go on
    ngx.write_conf(ngx.conf_text.replace("value=after", "valu=x"))
    res = subprocess.run(ngx.cmd("-t"), env=ngx.env,
                                       capture_output=True)
    assert res.returncode != 0
    assert b'plugin "echo": unknown argument' in res.stderr, res.stderr
    r = client.request(ngx.port, path="/open/plain")
    assert r.header("x-plugin-echo") == "after", r.headers


# ------------------------------------------------------------ refusals


def check_refusal(r, status, code):
    assert r.status == status, (r, r.body)
    assert r.header("content-type") == "application/problem+json", r.headers
    doc = json.loads(r.body)
    assert set(doc) == PROBLEM_KEYS, doc
    assert doc["status"] == status and doc["code"] == code, doc
    assert doc["title"] == "Request Refused", doc
    assert doc["detail"], doc
    assert r.header("x-request-id") == doc["request_id"], r.headers
    assert r.header("cache-control") == "no-store", r.headers
    # never charged: no billing header says otherwise
    assert r.header("x-toll-amount") is None, r.headers
    return doc


GUARD = ("toll_plugin request_guard methods=GET,POST max_body=16 "
         "content_type=application/json require_header=Idempotency-Key;")


def test_request_guard_refuses(start_nginx, redis_server, llm):
    key = raw_key(redis_server)
    ngx = start(start_nginx, llm, loc("/api/", GUARD, service="chat"))
    auth = key.bearer()
    idem = ("Idempotency-Key", "k1")
    js = ("Content-Type", "application/json")

    cases = [
        # (method, headers, body, status, code)
        ("DELETE", [auth, idem], b"", 405, "method_not_allowed"),
        ("POST", [auth, idem, js], b"x" * 17, 413, "body_too_large"),
        ("POST", [auth, idem, ("Content-Type", "text/plain")], b"{}", 415,
         "unsupported_media_type"),
        ("POST", [auth, idem], b"{}", 415, "unsupported_media_type"),
        ("GET", [auth], b"", 400, "header_required"),
        ("GET", [auth, ("Idempotency-Key", "")], b"", 400,
         "header_required"),
    ]
    for method, headers, body, status, code in cases * 2:
        r = client.request(ngx.port, method=method, path="/api/json?total=9",
                           headers=headers, body=body)
        doc = check_refusal(r, status, code)
        if code == "header_required":
            assert "Idempotency-Key" in doc["detail"], doc
    assert llm.count == 0

    # chunked: no length to check against max_body
    raw = (b"POST /api/json HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
           b"Idempotency-Key: k\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           b"2\r\n{}\r\n0\r\n\r\n" % auth[1].encode())
    r = client.send_raw(ngx.port, raw, method="POST")
    check_refusal(r, 411, "length_required")
    assert llm.count == 0

    # the gate answers first: no key, no plugin
    r = client.request(ngx.port, method="DELETE", path="/api/json")
    assert r.status == 401, r

    r = client.request(ngx.port, method="POST", path="/api/json?total=9",
                       headers=[auth, idem, js], body=b'{"a":1}')
    assert r.status == 200, (r, r.body)
    assert llm.count == 1
    refusals = re.findall(r'toll plugin "request_guard": refused, (\d+) '
                          r'(\w+)', ngx.error_log_text())
    assert len(refusals) == 13, refusals


def test_batch_ops(start_nginx, redis_server, llm):
    key = raw_key(redis_server)
    ngx = start(start_nginx, llm,
                loc("/batch/", "toll_plugin batch_ops max=100;",
                    service="batch")
                + loc("/batcharg/", "toll_plugin batch_ops header=X-N "
                      "arg=ops required=off;", service="batch")
                + loc("/open/", "toll_plugin batch_ops;", gated=False),
                level="debug")
    auth = key.bearer()

    for value, status, code in [(None, 400, "batch_count_required"),
                                ("abc", 400, "batch_count_invalid"),
                                ("0", 400, "batch_count_invalid"),
                                ("-3", 400, "batch_count_invalid"),
                                ("1.5", 400, "batch_count_invalid"),
                                ("101", 413, "batch_too_large"),
                                ("99999999999999999999999", 400,
                                 "batch_count_invalid")]:
        h = [auth] + ([("X-Batch-Operations", value)] if value else [])
        r = client.request(ngx.port, path="/batch/plain", headers=h)
        check_refusal(r, status, code)
    assert llm.count == 0
    assert units_lines(ngx) == []

    r = client.request(ngx.port, path="/batch/plain",
                       headers=[auth, ("X-Batch-Operations", "7")])
    assert r.status == 200, (r, r.body)
    r = client.request(ngx.port, path="/batch/plain",
                       headers=[auth, ("X-Batch-Operations", "100")])
    assert r.status == 200, (r, r.body)
    r = client.request(ngx.port, path="/batcharg/plain?ops=12",
                       headers=[auth])
    assert r.status == 200, (r, r.body)
    r = client.request(ngx.port, path="/batcharg/plain?ops=12",
                       headers=[auth, ("X-N", "3")])
    assert r.status == 200, (r, r.body)
    r = client.request(ngx.port, path="/batcharg/plain", headers=[auth])
    assert r.status == 200, (r, r.body)
    r = client.request(ngx.port, path="/open/plain",
                       headers=[("X-Batch-Operations", "4")])
    assert r.status == 200, (r, r.body)
    assert units_lines(ngx) == [("batch_ops", 7, "kept"),
                                ("batch_ops", 100, "kept"),
                                ("batch_ops", 12, "kept"),
                                ("batch_ops", 3, "kept"),
                                ("batch_ops", 4, "ignored")]
    # the refused calls cost nothing; the one without a count, the base
    wait_charged(redis_server, key.owner, "batch", 5, 7 + 100 + 12 + 3)


# ------------------------------------------------------------ llm_usage


def llm_locations():
    return (loc("/llm/", "toll_plugin llm_usage; proxy_buffering off;",
                service="chat")
            + loc("/buffered/", "toll_plugin llm_usage; "
                  "toll_plugin echo value=f; "
                  "proxy_buffers 4 1k; proxy_buffer_size 1k; "
                  "proxy_busy_buffers_size 2k; "
                  "proxy_max_temp_file_size 8m;", service="chat")
            + loc("/jsononly/", "toll_plugin llm_usage sse=off;",
                  service="chat")
            + loc("/open/", "toll_plugin llm_usage;", gated=False))


def test_llm_usage_json(start_nginx, redis_server, llm):
    key = raw_key(redis_server)
    ngx = start(start_nginx, llm, llm_locations(), level="debug")
    auth = [key.bearer()]
    for path in ("/llm/json?total=42", "/jsononly/json?total=43",
                 "/llm/gzip?total=44", "/llm/plain", "/jsononly/sse?total=45",
                 "/open/json?total=46"):
        r = client.request(ngx.port, path=path, headers=auth)
        assert r.status == 200, (path, r)
    assert units_lines(ngx) == [("llm_usage", 42, "kept"),
                                ("llm_usage", 43, "kept"),
                                ("llm_usage", 46, "ignored")]
    # gzip, plain and an SSE answer on /jsononly/: the base price
    wait_charged(redis_server, key.owner, "chat", 5, 42 + 43)
    assert re.search(r'\[info\].*toll plugin "llm_usage": a gzip answer '
                     r'cannot be read', ngx.error_log_text())


def test_llm_usage_sse_split_everywhere(start_nginx, redis_server, llm,
                                       tmp_path):
    """The stream cut in two at every byte of its body; each cut gives
    its own total, and each is read, charged and posted to the ledger
    exactly."""
    key = raw_key(redis_server)
    ngx = start(start_nginx, llm, llm_locations(), level="debug")
    conn = client.KeepAlive(ngx.port)
    size = len(sse_body(1000))
    expected = []
    for cut in range(size + 1):
        total = 1000 + cut
        # the body's length does not depend on the total's digits here
        assert len(sse_body(total)) == size
        r = conn.request(path="/llm/sse?total=%d&split=%d" % (total, cut),
                         headers=[key.bearer()])
        assert r.status == 200, r
        assert r.body == sse_body(total)
        expected.append(("llm_usage", total, "kept"))
    conn.close()
    assert units_lines(ngx) == expected
    units = sum(u for _, u, _ in expected)
    wait_charged(redis_server, key.owner, "chat", len(expected), units)
    # upstream = meter = ledger
    s = Settle(redis_server, tmp_path / "ledger.db")
    try:
        p = s.once()
        assert p.returncode == 0, p.stderr
        wait_drained(redis_server.client)
        db = connect(s.ledger)
        try:
            row = db.execute("SELECT sum(calls), sum(units),"
                             " sum(amount_micros) FROM transactions"
                             " WHERE kind = 'usage' AND service = 'chat'"
                             ).fetchone()
        finally:
            db.close()
        assert row == (len(expected), units,
                       charged(len(expected), units)), row
        ledger_check(s.ledger)
    finally:
        s.close()
    assert llm.count == len(expected)


def test_llm_usage_from_a_file_buffer(start_nginx, redis_server, llm):
    """A response nginx buffered to a temporary file is read from it;
    what the client gets is unchanged."""
    key = raw_key(redis_server)
    ngx = start(start_nginx, llm, llm_locations(), level="debug")
    body = sse_body(777, 4 << 20)
    # a small window: nginx cannot hand the answer to the kernel at once
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(20)
    s.connect(("127.0.0.1", ngx.port))
    s.sendall(b"GET /buffered/big?total=777&size=4194304 HTTP/1.1\r\n"
              b"Host: x\r\nAuthorization: %s\r\nConnection: close\r\n\r\n"
              % key.bearer()[1].encode())
    # not read until the upstream's answer is on disk
    wait_log(ngx, r"buffered to a temporary file")
    r, _ = client.read_response(s)
    s.close()
    assert r.status == 200, r
    assert r.body == body
    assert units_lines(ngx) == [("llm_usage", 777, "kept")]
    wait_charged(redis_server, key.owner, "chat", 1, 777)
    # every byte went through the body hooks, those read from the file too
    lines = wait_log(ngx, r"echo f: (\d+) body bytes, last=(\d)")
    assert lines == [(str(len(body)), "1")], (lines, len(body))


def test_batch_above_max_units_refused(start_nginx, redis_server, llm):
    """A declared count above what one call is charged for (the service's
    max_units) is refused up front: the upstream never does work nobody
    pays for."""
    key = raw_key(redis_server)
    ngx = start(start_nginx, llm, """
        location /small/ {
            toll on;
            toll_service small provider=acme price=0.01 unit_price=0.001
                max_units=5;
            toll_plugin batch_ops max=100;
            %s
        }
""" % LLM)
    for n, status in (("5", 200), ("6", 413), ("100", 413)):
        r = client.request(ngx.port, path="/small/plain",
                           headers=[key.bearer(),
                                    ("X-Batch-Operations", n)])
        if status == 200:
            assert r.status == 200, (r, r.body)
        else:
            check_refusal(r, 413, "batch_too_large")
    assert llm.count == 1
    wait_usage(redis_server.client, {(key.owner, "small"): {
        "calls": 1, "units": 5, "amount_micros": 15000}},
        fields=("calls", "units", "amount_micros"))


def test_refusal_gives_the_hold_back(start_nginx, redis_server, llm):
    """A plugin that refuses after the gate held the call's price from a
    prepaid balance: the hold goes back at once, as a redirect's does;
    the balance pays exactly the calls that passed."""
    from helpers.balance import balance, credit, invariant
    key = raw_key(redis_server, owner="prebuyer")
    rc = redis_server.client
    credit(rc, "prebuyer", 100000)           # two calls at 0.05
    ngx = start(start_nginx, llm, """
        location /pre/ {
            toll on;
            toll_prepaid on;
            toll_service pre provider=acme price=0.05;
            toll_plugin request_guard methods=GET;
            %s
        }
""" % LLM)
    for _ in range(3):
        r = client.request(ngx.port, path="/pre/plain", method="POST",
                           headers=[key.bearer()])
        check_refusal(r, 405, "method_not_allowed")
    statuses = []
    for _ in range(3):
        statuses.append(client.request(ngx.port, path="/pre/plain",
                                       headers=[key.bearer()]).status)
        time.sleep(0.1)                      # the hold back in the log phase
    assert statuses == [200, 200, 402], statuses
    assert llm.count == 2

    def settled():
        b = balance(rc, "prebuyer")
        return b.get("spent") == 100000 and b.get("held", 0) == 0
    wait_for(settled, 15, interval=0.2, what="the balance settled")
    invariant(rc, "prebuyer")
