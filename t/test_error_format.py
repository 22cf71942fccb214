"""Error shapes (issue 17 item 4; docs/errors.md): toll_error_format
problem | envelope, toll_error_type_base, toll_error_trace_header.

Every refusal toll can give is asked of a location answering problem+json
and of one answering the envelope: the two must agree on status, code,
headers (apart from ids, Date and the type) and the refusal's members,
and each must have its own exact shape.  Each request is sent twice, so
that state one leaves behind shows up in the next.
"""

import datetime
import os
import re
import time
import uuid

import pytest

from helpers import client
from helpers.caps import set_cap
from helpers.keys import build_dir, gen_key_id, gen_secret, raw_key
from helpers.limits import SlowUpstream, read_one, send_only
from helpers.meter import micros
from helpers.problem import REQUEST_ID_RE
from helpers.procs import PROXY, free_port, wait_for


MARK = "# <-- under test"

FORMATS = ("problem", "envelope")
PROBLEM_KEYS = {"type", "title", "status", "code", "detail", "request_id"}
ENVELOPE_KEYS = {"code", "message", "request_id", "timestamp"}
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
TITLES = {400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
          403: "Forbidden", 429: "Too Many Requests",
          503: "Service Unavailable"}
# the headers both formats must send alike (values compared as they are)
SAME_HEADERS = ("www-authenticate", "cache-control", "connection")

BASE = "https://errors.example.com/"
TRACE = "X-Correlation-ID"


def guard_plugin():
    return os.path.join(os.path.abspath(build_dir()), "plugins",
                        "toll_request_guard.so")


HTTP = """
    toll_plan onepm rate=1r/m burst=1;
    toll_plan conc1 concurrency=1;
    toll_plugin_load request_guard %s;
"""


def fmt_locations(fmt, slow_port, extra=""):
    """The gated locations of one format, under /<fmt>/."""
    return """
        location /%(f)s/api/ {
            toll on;
            toll_error_format %(f)s;
            %(extra)s
            %(proxy)s
        }
        location /%(f)s/prepaid/ {
            toll on;
            toll_error_format %(f)s;
            toll_prepaid on;
            toll_service prepaid_%(f)s provider=acme price=0.05;
            %(proxy)s
        }
        location /%(f)s/capped/ {
            toll on;
            toll_error_format %(f)s;
            toll_service capped_%(f)s provider=acme price=0.05;
            %(proxy)s
        }
        location /%(f)s/guard/ {
            toll on;
            toll_error_format %(f)s;
            toll_plugin request_guard methods=GET;
            %(proxy)s
        }
        location /%(f)s/slow/ {
            toll on;
            toll_error_format %(f)s;
            proxy_pass http://127.0.0.1:%(slow)d;
            proxy_read_timeout 60s;
        }
""" % {"f": fmt, "extra": extra, "proxy": PROXY, "slow": slow_port}


@pytest.fixture
def slow():
    s = SlowUpstream()
    yield s
    s.close()


def start(start_nginx, slow, extra="", server_extra="", more=""):
    locations = "".join(fmt_locations(f, slow.port, extra) for f in FORMATS)
    return start_nginx(http_extra=HTTP % guard_plugin(),
                       server_extra=server_extra,
                       locations=locations + more)


def get(ngx, path, headers=(), method="GET"):
    return client.request(ngx.port, method=method, path=path,
                          headers=list(headers))


# ------------------------------------------------------------ checkers

def check_problem_body(r, status, code, members=(), type_="about:blank",
                       trace=None):
    """toll's problem answer; returns the doc.  members: the refusal's
    own, beyond RFC 9457's and toll's."""
    assert r.status == status, (r, r.headers, r.body)
    assert r.header("content-type") == "application/problem+json", r.headers
    assert r.body.endswith(b"}\n"), r.body
    doc = r.json()
    keys = PROBLEM_KEYS | set(members)
    if trace is not None:
        keys.add("traceId")
    assert set(doc) == keys, doc
    assert doc["type"] == type_, doc
    assert doc["title"] == TITLES.get(status, doc["title"]), doc
    assert doc["status"] == status and isinstance(doc["status"], int), doc
    assert doc["code"] == code, doc
    assert isinstance(doc["detail"], str) and doc["detail"], doc
    rid = r.header_all("x-request-id")
    assert len(rid) == 1 and REQUEST_ID_RE.match(rid[0]), r.headers
    if trace is None:
        assert doc["request_id"] == rid[0], (doc, rid)
    else:
        assert doc["request_id"] == doc["traceId"] == trace, doc
    check_common_headers(r, status)
    if "retry_after" in doc:
        assert doc["retry_after"] == int(r.header("retry-after")), doc
    return doc


def check_envelope(r, status, code, details=None, trace=None):
    """toll's envelope answer; returns its "error" object.  details: the
    names expected in "details" (None: no details)."""
    assert r.status == status, (r, r.headers, r.body)
    assert r.header("content-type") == "application/json", r.headers
    assert r.body.endswith(b"}\n"), r.body
    doc = r.json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    keys = set(ENVELOPE_KEYS)
    retry = r.header_all("retry-after")
    if retry:
        keys.add("retry_after")
    if details is not None:
        keys.add("details")
    assert set(err) == keys, err
    # the order the references write them in: code first, then message
    assert list(err)[:2] == ["code", "message"], err
    assert list(err)[-2:] == ["request_id", "timestamp"], err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err
    if retry:
        assert len(retry) == 1 and re.fullmatch(r"\d+", retry[0]), r.headers
        assert isinstance(err["retry_after"], int), err
        assert err["retry_after"] == int(retry[0]) >= 1, (err, retry)
    if details is not None:
        assert isinstance(err["details"], dict), err
        assert set(err["details"]) == set(details), err
    rid = r.header_all("x-request-id")
    assert len(rid) == 1 and REQUEST_ID_RE.match(rid[0]), r.headers
    assert err["request_id"] == (trace if trace is not None else rid[0]), err
    check_timestamp(err["timestamp"])
    check_common_headers(r, status)
    return err


def check_timestamp(ts):
    assert TIMESTAMP_RE.match(ts), ts
    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    assert abs(t - time.time()) <= 5, (ts, time.time())


def check_common_headers(r, status):
    assert r.header_all("cache-control") == ["no-store"], r.headers
    if status == 401:
        assert r.header_all("www-authenticate") == ['Bearer realm="toll"'], \
            r.headers
    else:
        assert r.header("www-authenticate") is None, r.headers


def check_same(p, e, retry_slack=0):
    """The problem answer p and the envelope answer e of one refusal say
    the same thing: status, code, message, headers, members."""
    pd, ed = p.json(), e.json()["error"]
    assert p.status == e.status, (p, e)
    assert pd["code"] == ed["code"], (pd, ed)
    assert pd["detail"] == ed["message"], (pd, ed)
    for h in SAME_HEADERS:
        assert p.header_all(h) == e.header_all(h), (h, p.headers, e.headers)
    pr, er = p.header_all("retry-after"), e.header_all("retry-after")
    assert len(pr) == len(er), (p.headers, e.headers)
    if pr:
        assert abs(int(pr[0]) - int(er[0])) <= retry_slack, (pr, er)
    members = {k: v for k, v in pd.items()
               if k not in PROBLEM_KEYS and k != "retry_after"}
    assert members == ed.get("details", {}), (pd, ed)
    if "retry_after" in pd:
        assert abs(pd["retry_after"] - ed["retry_after"]) <= retry_slack


def both(fn, retry_slack=0):
    """fn(fmt) -> answer, asked twice of each format; the last of each."""
    got = {}
    for _ in range(2):
        for fmt in FORMATS:
            got[fmt] = fn(fmt)
    check_same(got["problem"], got["envelope"], retry_slack)
    return got["problem"], got["envelope"]


# ------------------------------------------------- every refusal, twice

def test_unauthorized(start_nginx, slow, redis_server, upstream):
    ngx = start(start_nginx, slow)
    p, e = both(lambda f: get(ngx, "/%s/api/x" % f))
    check_problem_body(p, 401, "unauthorized")
    check_envelope(e, 401, "unauthorized")
    assert upstream.count == 0


def test_every_401_reads_the_same(start_nginx, slow, redis_server,
                                  upstream):
    """Apart from its ids and its timestamp, every 401 of the envelope is
    one answer, whatever the credential's fault."""
    ngx = start(start_nginx, slow)
    good = raw_key(redis_server, owner="acme")
    revoked = raw_key(redis_server, owner="r", status="revoked")
    expired = raw_key(redis_server, owner="x",
                      expires_at=int(time.time()) - 60)
    creds = [[], [("Authorization", "Bearer nonsense")],
             [("X-API-Key", gen_key_id() + ":" + gen_secret())],
             [("X-API-Key", good.key_id + ":" + gen_secret())],
             [revoked.bearer()], [expired.x_api_key()],
             [("Authorization", "Basic dXNlcjpwYXNz")]]
    for fmt in FORMATS:
        seen = set()
        for hdrs in creds * 2:
            r = get(ngx, "/%s/api/x" % fmt, hdrs)
            if fmt == "envelope":
                err = check_envelope(r, 401, "unauthorized")
                body = r.body.replace(err["request_id"].encode(), b"<rid>")
                body = body.replace(err["timestamp"].encode(), b"<ts>")
            else:
                doc = check_problem_body(r, 401, "unauthorized")
                body = r.body.replace(doc["request_id"].encode(), b"<rid>")
            headers = tuple((k.lower(), v) for k, v in r.headers
                            if k.lower() not in ("date", "x-request-id"))
            seen.add((body, headers))
        assert len(seen) == 1, (fmt, seen)
    assert upstream.count == 0


def test_ambiguous_credentials(start_nginx, slow, redis_server, upstream):
    ngx = start(start_nginx, slow)
    a = raw_key(redis_server, owner="a")
    b = raw_key(redis_server, owner="b")
    p, e = both(lambda f: get(ngx, "/%s/api/x" % f,
                              [a.bearer(), b.x_api_key()]))
    check_problem_body(p, 400, "ambiguous_credentials")
    check_envelope(e, 400, "ambiguous_credentials")
    assert upstream.count == 0


def test_rate_limited(start_nginx, slow, redis_server, upstream):
    ngx = start(start_nginx, slow)
    keys = {f: raw_key(redis_server, owner="rl-" + f, plan="onepm")
            for f in FORMATS}
    for f in FORMATS:
        r = get(ngx, "/%s/api/x" % f, [keys[f].bearer()])
        assert r.status == 200, (r, r.body)
    # a token a minute: Retry-After of the two may differ by a second
    p, e = both(lambda f: get(ngx, "/%s/api/x" % f, [keys[f].bearer()]),
                retry_slack=1)
    doc = check_problem_body(p, 429, "rate_limited",
                             members=("policy", "retry_after"))
    err = check_envelope(e, 429, "rate_limited", details=("policy",))
    assert err["details"]["policy"] == doc["policy"], (doc, err)
    assert 1 <= err["retry_after"] <= 60, err
    assert upstream.count == 2


def test_rate_limited_with_another_status(start_nginx, slow, redis_server,
                                          upstream):
    """toll_limit_status 503: the status and the problem's title change,
    the code and the envelope's members do not."""
    ngx = start(start_nginx, slow, extra="toll_limit_status 503;")
    keys = {f: raw_key(redis_server, owner="rs-" + f, plan="onepm")
            for f in FORMATS}
    for f in FORMATS:
        assert get(ngx, "/%s/api/x" % f, [keys[f].bearer()]).status == 200
    p, e = both(lambda f: get(ngx, "/%s/api/x" % f, [keys[f].bearer()]),
                retry_slack=1)
    doc = check_problem_body(p, 503, "rate_limited",
                             members=("policy", "retry_after"))
    assert doc["title"] == "Service Unavailable", doc
    err = check_envelope(e, 503, "rate_limited", details=("policy",))
    assert err["retry_after"] > 1, err


def test_concurrency_limited(start_nginx, slow, redis_server, upstream):
    ngx = start(start_nginx, slow)
    k = raw_key(redis_server, owner="conc", plan="conc1")
    s = send_only(ngx.port, "/problem/slow/hold/a", [k.bearer()])
    try:
        wait_for(lambda: slow.held() == 1, 5, what="one request held")
        p, e = both(lambda f: get(ngx, "/%s/slow/fast" % f, [k.bearer()]))
    finally:
        slow.release()
    assert read_one(s).status == 200
    doc = check_problem_body(p, 429, "concurrency_limited",
                             members=("policy", "retry_after"))
    assert doc["policy"] == "concurrency", doc
    err = check_envelope(e, 429, "concurrency_limited", details=("policy",))
    assert err["details"] == {"policy": "concurrency"}, err


def test_payment_required(start_nginx, slow, redis_server, upstream):
    ngx = start(start_nginx, slow)
    k = raw_key(redis_server, owner="nobalance")
    p, e = both(lambda f: get(ngx, "/%s/prepaid/x" % f, [k.bearer()]))
    doc = check_problem_body(p, 402, "payment_required",
                             members=("price", "currency", "balance"))
    err = check_envelope(e, 402, "payment_required",
                         details=("price", "currency", "balance"))
    assert err["details"] == {"price": "0.05", "currency": "USD",
                              "balance": "0"}, err
    assert "retry_after" not in err and "retry_after" not in doc
    assert upstream.count == 0


def test_spend_cap_exceeded(start_nginx, slow, redis_server, upstream):
    # a cap before nginx starts: one set later is seen within a second
    set_cap(redis_server.client, "capped", daily=micros("0.01"))
    ngx = start(start_nginx, slow)
    k = raw_key(redis_server, owner="capped")
    p, e = both(lambda f: get(ngx, "/%s/capped/x" % f, [k.bearer()]),
                retry_slack=1)
    check_problem_body(p, 402, "spend_cap_exceeded",
                       members=("cap", "period", "scope", "currency"))
    err = check_envelope(e, 402, "spend_cap_exceeded",
                         details=("cap", "period", "scope", "currency"))
    assert err["details"] == {"cap": "0.01", "period": "daily",
                              "scope": "buyer", "currency": "USD"}, err
    # until midnight UTC
    assert abs(err["retry_after"] - (86400 - int(time.time()) % 86400)) <= 3
    assert upstream.count == 0


def test_plugin_refusal(start_nginx, slow, redis_server, upstream):
    ngx = start(start_nginx, slow)
    k = raw_key(redis_server, owner="guarded")
    p, e = both(lambda f: get(ngx, "/%s/guard/x" % f, [k.bearer()],
                              method="DELETE"))
    check_problem_body(p, 405, "method_not_allowed")
    assert p.json()["title"] == "Request Refused", p.body
    check_envelope(e, 405, "method_not_allowed")
    assert upstream.count == 0


def test_store_unavailable(start_nginx, slow, redis_server, upstream):
    ngx = start(start_nginx, slow)
    redis_server.kill()
    unknown = [("X-API-Key", gen_key_id() + ":" + gen_secret())]
    p, e = both(lambda f: get(ngx, "/%s/api/x" % f, unknown))
    check_problem_body(p, 503, "store_unavailable")
    err = check_envelope(e, 503, "store_unavailable")
    assert err["retry_after"] == 1, err
    assert e.header_all("retry-after") == ["1"], e.headers


def test_forbidden(start_nginx, slow, redis_server, upstream):
    ngx = start(start_nginx, slow, extra="toll_require scope=admin;")
    k = raw_key(redis_server, owner="noscope")
    p, e = both(lambda f: get(ngx, "/%s/api/x" % f, [k.bearer()]))
    doc = check_problem_body(p, 403, "forbidden")
    assert "admin" in doc["detail"], doc
    check_envelope(e, 403, "forbidden")
    assert upstream.count == 0


# ---------------------------------------------------- the type base URI

def test_type_base(start_nginx, slow, redis_server, upstream):
    """problem's type is the base followed by the code (a plugin's too);
    about:blank at a location ends the server's; the envelope has no
    type."""
    ngx = start(start_nginx, slow,
                server_extra="        toll_error_type_base %s;" % BASE,
                more="""
        location /blank/ {
            toll on;
            toll_error_type_base about:blank;
            %s
        }
        location /urn/ {
            toll on;
            toll_error_type_base urn:example:toll:;
            %s
        }
""" % (PROXY, PROXY))
    k = raw_key(redis_server, owner="typed")
    for _ in range(2):
        r = get(ngx, "/problem/api/x")
        check_problem_body(r, 401, "unauthorized", type_=BASE + "unauthorized")
        r = get(ngx, "/problem/guard/x", [k.bearer()], method="DELETE")
        check_problem_body(r, 405, "method_not_allowed",
                           type_=BASE + "method_not_allowed")
        r = get(ngx, "/problem/prepaid/x", [k.bearer()])
        check_problem_body(r, 402, "payment_required",
                           members=("price", "currency", "balance"),
                           type_=BASE + "payment_required")
        r = get(ngx, "/blank/x")
        check_problem_body(r, 401, "unauthorized")
        r = get(ngx, "/urn/x")
        check_problem_body(r, 401, "unauthorized",
                           type_="urn:example:toll:unauthorized")
        r = get(ngx, "/envelope/api/x")
        check_envelope(r, 401, "unauthorized")
        assert BASE.encode() not in r.body, r.body


# ------------------------------------------------------ the trace header

TRACE_OK = [
    "6f0c1f5e-3d7b-4c2a-9b1e-2f8d4a6c0b17",
    "00-a1b2c3d4e5f6-0123456789ab-01",        # 004's traceId
    "x" * 128,                                # at the bound
    "a!#$%&'()*+,-./:;<=>?@[]^_`{|}~z",       # every visible sign but two
]

# (value as sent, why it is refused); nginx passes each of them to toll
TRACE_REFUSED = [
    ("x" * 129, "one byte too long"),
    ("x" * 4000, "far too long"),
    ('abc"def', "a quote"),
    ('abc","code":"forged', "a member forged"),
    ("abc\\def", "a backslash"),
    ("abc\x01def", "a control byte"),
    ("abc\x7fdef", "DEL"),
    ("abc\tdef", "a tab"),
    ("abc def", "a space"),
    (b"abc\xc3\xa9def", "UTF-8"),
    (b"abc\xffdef", "a byte over 0x7f"),
    ("", "empty"),
]


def test_trace_header(start_nginx, slow, redis_server, upstream):
    ngx = start(start_nginx, slow,
                extra="toll_error_trace_header %s;" % TRACE)
    for fmt in FORMATS:
        path = "/%s/api/x" % fmt
        for _ in range(2):
            for value in TRACE_OK:
                for name in (TRACE, TRACE.lower(), TRACE.upper()):
                    r = get(ngx, path, [(name, value)])
                    check(fmt, r, trace=value)
            # the first of two
            r = get(ngx, path, [(TRACE, "first"), (TRACE, "second")])
            check(fmt, r, trace="first")
            # absent: the request id, in both members
            r = get(ngx, path, [("X-Other", "nope")])
            check(fmt, r, trace=r.header("x-request-id"))
            for value, why in TRACE_REFUSED:
                r = get(ngx, path, [(TRACE, value)])
                check(fmt, r, trace=r.header("x-request-id"), why=why)
    # where no trace header is named the body's id is toll's, and the
    # problem has no traceId
    k = raw_key(redis_server, owner="t")
    r = get(ngx, "/problem/guard/x", [k.bearer(), (TRACE, "abc")],
            method="DELETE")
    check_problem_body(r, 405, "method_not_allowed")


def check(fmt, r, trace, why=""):
    if fmt == "problem":
        doc = check_problem_body(r, 401, "unauthorized", trace=trace)
        assert doc["request_id"] == trace, (why, doc)
    else:
        err = check_envelope(r, 401, "unauthorized", trace=trace)
        assert err["request_id"] == trace, (why, err)


def test_trace_header_with_members(start_nginx, slow, redis_server,
                                   upstream):
    """The trace id sits with the refusal's members as it does alone."""
    ngx = start(start_nginx, slow,
                server_extra="        toll_error_trace_header %s;" % TRACE)
    k = raw_key(redis_server, owner="tm")
    tid = uuid.uuid4().hex
    r = get(ngx, "/problem/prepaid/x", [k.bearer(), (TRACE, tid)])
    check_problem_body(r, 402, "payment_required",
                       members=("price", "currency", "balance"), trace=tid)
    r = get(ngx, "/envelope/prepaid/x", [k.bearer(), (TRACE, tid)])
    check_envelope(r, 402, "payment_required",
                   details=("price", "currency", "balance"), trace=tid)


# ----------------------------------------------------------- inheritance

def test_inheritance(start_nginx, redis_server, upstream):
    """http sets the format, server the base and the trace header; a
    location inherits all three or ends each."""
    ngx = start_nginx(http_extra="    toll_error_format envelope;",
                      server_extra="        toll_error_type_base %s;\n"
                      "        toll_error_trace_header %s;" % (BASE, TRACE),
                      locations="""
        location /inherit/ {
            toll on;
            %(p)s
        }
        location /problem/ {
            toll on;
            toll_error_format problem;
            %(p)s
        }
        location /override/ {
            toll on;
            toll_error_format problem;
            toll_error_type_base about:blank;
            toll_error_trace_header off;
            %(p)s
        }
        location /other/ {
            toll on;
            toll_error_format problem;
            toll_error_trace_header X-Trace;
            %(p)s
        }
""" % {"p": PROXY})
    tid = "trace-" + uuid.uuid4().hex
    for _ in range(2):
        r = get(ngx, "/inherit/x", [(TRACE, tid)])
        check_envelope(r, 401, "unauthorized", trace=tid)
        r = get(ngx, "/problem/x", [(TRACE, tid)])
        check_problem_body(r, 401, "unauthorized",
                           type_=BASE + "unauthorized", trace=tid)
        r = get(ngx, "/override/x", [(TRACE, tid)])
        check_problem_body(r, 401, "unauthorized")
        r = get(ngx, "/other/x", [(TRACE, tid), ("X-Trace", "t2")])
        check_problem_body(r, 401, "unauthorized",
                           type_=BASE + "unauthorized", trace="t2")


# --------------------------------------------------------------- nginx -t

def http_block(location, server=""):
    return """
    toll_redis 127.0.0.1:%d timeout=500ms;
    toll_zone 10m;
    server {
        listen 127.0.0.1:%d;
        %s
        location / {
            toll on;
            %s
        }
    }
""" % (free_port(), free_port(), server, location)


def assert_refused(rc, out, text, *must_mention):
    assert rc != 0, "nginx -t accepted a bad config:\n%s\n%s" % (text, out)
    errors = [l for l in out.splitlines() if "[emerg]" in l or "[warn]" in l]
    assert len(errors) == 1, out
    for m in must_mention:
        assert m in errors[0], "%r not in %r" % (m, errors[0])
    line = [i for i, l in enumerate(text.splitlines(), 1) if MARK in l][0]
    assert re.search(r"nginx\.conf:%d\b" % line, errors[0]), errors[0]
    assert "test failed" in out, out


BAD = [
    ("format unknown", "toll_error_format json;", ['invalid value "json"']),
    ("format two", "toll_error_format problem envelope;",
     ["invalid number of arguments"]),
    ("base relative", "toll_error_type_base errors/;",
     ['invalid type base URI "errors/": not absolute']),
    ("base path only", "toll_error_type_base /errors/;", ["not absolute"]),
    ("base scheme only", "toll_error_type_base https:;", ["not absolute"]),
    ("base scheme digit", "toll_error_type_base 1http://x/;",
     ["not absolute"]),
    ("base empty", 'toll_error_type_base "";', ["not absolute"]),
    ("base quote", 'toll_error_type_base \'https://x/"a\';',
     ["character 0x22 is not allowed"]),
    ("base backslash", "toll_error_type_base 'https://x/\\\\a';",
     ["character 0x5C is not allowed"]),
    ("base space", "toll_error_type_base 'https://x/ a';",
     ["character 0x20 is not allowed"]),
    ("base brace", "toll_error_type_base 'https://x/{a}';",
     ["character 0x7B is not allowed"]),
    ("base utf8", "toll_error_type_base https://x/\u00e9;",
     ["character 0xC3 is not allowed"]),
    ("base long", "toll_error_type_base https://x/%s;" % ("a" * 600),
     ["longer than 512 bytes"]),
    ("trace colon", "toll_error_trace_header X-Trace:;",
     ['invalid header name "X-Trace:"']),
    ("trace space", "toll_error_trace_header 'X Trace';",
     ['invalid header name "X Trace"']),
    ("trace empty", 'toll_error_trace_header "";',
     ['invalid header name ""']),
    ("trace two", "toll_error_trace_header X-A X-B;",
     ["invalid number of arguments"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_values_refused(nginx_t, case):
    _, directive, mentions = case
    for where in ("location", "server"):
        if where == "location":
            text = http_block("%s %s" % (directive, MARK))
        else:
            text = http_block("", server="%s %s" % (directive, MARK))
        rc, out, full = nginx_t(text)
        assert_refused(rc, out, full, *mentions)


def test_good_values_pass(nginx_t):
    for base in (BASE, "https://errors.example.com/v1/errors#",
                 "urn:toll:error:", "tag:example.com,2026:toll/",
                 "about:blank", "https://x/%7E~a?b=c&d=e;f"):
        text = http_block("toll_error_format envelope;\n"
                          "            toll_error_type_base '%s';\n"
                          "            toll_error_trace_header "
                          "X-Correlation-ID;" % base,
                          server="toll_error_format problem;\n"
                          "        toll_error_trace_header off;")
        rc, out, _ = nginx_t(text)
        assert rc == 0, (base, out)
        assert "test is successful" in out, out
    text = "toll_error_format envelope;\n" + http_block("")
    rc, out, _ = nginx_t(text)
    assert rc == 0, out
