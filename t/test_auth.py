"""Authentication: who gets through the gate, what the upstream learns,
and what everyone else is told.

Data-driven where cases are many: each case runs twice, so that state
left behind by one request (cache entries, per-connection or per-worker
leftovers) shows up as a different answer the second time.
"""

import hashlib
import os
import time
import uuid

import pytest

from helpers import client
from helpers.keys import (gen_key_id, gen_secret, make_key, raw_key,
                          redis_name, revoke_key)
from helpers.problem import check_problem, without_request_id
from helpers.procs import PROXY, wait_for
from helpers.upstream import header_values


tag = client.tag


def send(ngx, headers=(), path="/api", method="GET", body=b""):
    return client.tagged_request(ngx.port, headers, path, method, body)


def assert_identity(req, key):
    """The upstream saw exactly one of each X-Toll-* header, ours."""
    assert header_values(req, "X-Toll-Buyer") == [key.owner], req
    assert header_values(req, "X-Toll-Key-Id") == [key.key_id], req
    if key.plan:
        assert header_values(req, "X-Toll-Plan") == [key.plan], req
    else:
        assert header_values(req, "X-Toll-Plan") == [], req


@pytest.fixture
def keys(redis_server):
    class K:
        gold = raw_key(redis_server, owner="acme", plan="gold")
        noplan = raw_key(redis_server, owner="globex")
        other = raw_key(redis_server, owner="initech", plan="silver")
        revoked = raw_key(redis_server, owner="umbrella", plan="gold",
                          status="revoked")
        expired = raw_key(redis_server, owner="hooli", plan="gold",
                          expires_at=int(time.time()) - 60)
        future = raw_key(redis_server, owner="pied", plan="gold",
                         expires_at=int(time.time()) + 3600)
    return K


# ------------------------------------------------------------- success

SUCCESS_CASES = {
    "bearer": lambda k: [("Authorization", "Bearer " + k.token)],
    "bearer_lowercase": lambda k: [("Authorization", "bearer " + k.token)],
    "bearer_uppercase": lambda k: [("Authorization", "BEARER " + k.token)],
    "bearer_spaces_tabs": lambda k: [("Authorization",
                                      "Bearer \t  \t" + k.token)],
    "x_api_key": lambda k: [("X-API-Key", k.token)],
    "x_api_key_lowercase_name": lambda k: [("x-api-key", k.token)],
    "both_identical": lambda k: [("Authorization", "Bearer " + k.token),
                                 ("X-API-Key", k.token)],
}


@pytest.mark.parametrize("case", sorted(SUCCESS_CASES))
def test_success(start_nginx, upstream, keys, case):
    ngx = start_nginx(toll_log=True)
    for key in (keys.gold, keys.noplan, keys.future) * 2:
        upstream.reset()
        r, t = send(ngx, SUCCESS_CASES[case](key), path="/api/v1?x=1")
        assert r.status == 200, (case, r, r.body)
        assert r.json() == {"ok": True}
        assert upstream.count == 1
        req = upstream.last
        assert req["path"] == "/api/v1?x=1"
        assert_identity(req, key)
        # credentials never travel upstream by default
        assert header_values(req, "Authorization") == []
        assert header_values(req, "X-API-Key") == []
        (line,) = ngx.wait_toll_log(t)
        assert line["auth"] == "OK", line
        assert line["key"] == key.key_id, line
        assert line["buyer"] == key.owner, line
        assert line["plan"] == (key.plan or "-"), line


def test_client_identity_headers_are_replaced(start_nginx, upstream, keys):
    ngx = start_nginx()
    forged = [("X-Toll-Buyer", "evil"), ("x-toll-buyer", "evil2"),
              ("X-TOLL-BUYER", "evil3"), ("X-Toll-Key-Id", "tk_evil"),
              ("x-toll-key-id", "tk_evil2"), ("X-Toll-Plan", "platinum"),
              ("x-TOLL-plan", "platinum2")]
    for key in (keys.gold, keys.noplan) * 2:
        for cred in (key.bearer(), key.x_api_key()):
            upstream.reset()
            r, _ = send(ngx, forged + [cred] + forged)
            assert r.status == 200, r
            assert upstream.count == 1
            req = upstream.last
            assert_identity(req, key)
            values = [v for k, v in req["headers"]
                      if k.lower().startswith("x-toll-")]
            assert not any(v.startswith(("evil", "tk_evil", "platinum"))
                           for v in values), req["headers"]


def test_pass_credentials(start_nginx, upstream, keys):
    ngx = start_nginx(locations="""
        location /pass/ {
            toll on;
            toll_pass_credentials on;
            %s
        }
        location /strip/ {
            toll on;
            %s
        }
    """ % (PROXY, PROXY))
    k = keys.gold
    for _ in range(2):
        for creds in ([k.bearer()], [k.x_api_key()],
                      [k.bearer(), k.x_api_key()]):
            upstream.reset()
            r, _ = send(ngx, creds, path="/pass/x")
            assert r.status == 200, r
            req = upstream.last
            assert_identity(req, k)
            for name, value in creds:
                assert header_values(req, name) == [value], req["headers"]

            upstream.reset()
            r, _ = send(ngx, creds, path="/strip/x")
            assert r.status == 200, r
            req = upstream.last
            assert_identity(req, k)
            assert header_values(req, "Authorization") == []
            assert header_values(req, "X-API-Key") == []


def test_keepalive_connection_does_not_leak_identity(start_nginx, upstream,
                                                     keys):
    """Requests on one connection are decided one by one: a key used by
    the previous request does not carry over to the next."""
    ngx = start_nginx()
    c = client.KeepAlive(ngx.port)
    seq = [keys.gold, None, keys.other, "wrong", keys.noplan, None,
           keys.gold, "post"] * 2
    for step in seq:
        upstream.reset()
        if step is None:
            r = c.request(path="/api")
            check_problem(r, 401, "unauthorized")
        elif step == "wrong":
            r = c.request(path="/api", headers=[
                ("X-API-Key", keys.gold.key_id + ":" + keys.other.secret)])
            check_problem(r, 401, "unauthorized")
        elif step == "post":
            # a refused request with a body: the body is read and dropped,
            # the connection stays usable
            c.sock.sendall(client.build_request(
                "POST", "/api", [("Content-Type", "application/json")],
                b'{"a":' + b"1" * 3000 + b"}", close=False))
            r, c.buf = client.read_response(c.sock, "POST", c.buf)
            check_problem(r, 401, "unauthorized")
        else:
            r = c.request(path="/api", headers=[step.bearer()])
            assert r.status == 200, r
            assert_identity(upstream.last, step)
        if step in (None, "wrong", "post"):
            assert upstream.count == 0
        if c.sock is None:
            c.connect()
    c.close()


# ------------------------------------------------------------- refusals

def _basic():
    return ("Authorization", "Basic dXNlcjpwYXNzd29yZA==")


# name -> (headers(keys), status, auth statuses accepted in $toll_auth_status)
REFUSAL_CASES = {
    "missing": (lambda k: [], 401, {"MISSING"}),
    "empty_x_api_key": (lambda k: [("X-API-Key", "")], 401,
                        {"MISSING", "MALFORMED"}),
    "other_scheme_only": (lambda k: [_basic()], 401,
                          {"MISSING", "MALFORMED"}),
    "bearer_no_token": (lambda k: [("Authorization", "Bearer")], 401,
                        {"MALFORMED"}),
    "bearer_no_colon": (lambda k: [("Authorization",
                                    "Bearer " + k.gold.key_id)],
                        401, {"MALFORMED"}),
    "bearer_empty_id": (lambda k: [("Authorization",
                                    "Bearer :" + k.gold.secret)],
                        401, {"MALFORMED"}),
    "bearer_empty_secret": (lambda k: [("Authorization",
                                        "Bearer " + k.gold.key_id + ":")],
                            401, {"MALFORMED"}),
    "bearer_trailing_word": (lambda k: [("Authorization", "Bearer "
                                         + k.gold.token + " extra")],
                             401, {"MALFORMED"}),
    "bearer_no_space": (lambda k: [("Authorization",
                                    "Bearer" + k.gold.token)],
                        401, {"MALFORMED"}),
    "x_api_key_no_colon": (lambda k: [("X-API-Key", k.gold.key_id)],
                           401, {"MALFORMED"}),
    "x_api_key_short_secret": (lambda k: [("X-API-Key", k.gold.key_id
                                           + ":" + "a" * 15)],
                               401, {"MALFORMED"}),
    "x_api_key_two_colons": (lambda k: [("X-API-Key", k.gold.token + ":x")],
                             401, {"MALFORMED"}),
    "x_api_key_with_scheme": (lambda k: [("X-API-Key",
                                          "Bearer " + k.gold.token)],
                              401, {"MALFORMED"}),
    "x_api_key_bad_char": (lambda k: [("X-API-Key", k.gold.key_id + ":"
                                       + k.gold.secret[:-1] + "%")],
                           401, {"MALFORMED"}),
    "unknown_bearer": (lambda k: [("Authorization", "Bearer "
                                   + gen_key_id() + ":" + gen_secret())],
                       401, {"UNKNOWN"}),
    "unknown_x_api_key": (lambda k: [("X-API-Key", "nosuchkey:"
                                      + gen_secret())], 401, {"UNKNOWN"}),
    "wrong_secret_bearer": (lambda k: [("Authorization", "Bearer "
                                        + k.gold.key_id + ":"
                                        + k.other.secret)],
                            401, {"WRONG_SECRET"}),
    "wrong_secret_x_api_key": (lambda k: [("X-API-Key", k.gold.key_id + ":"
                                           + k.gold.secret[:-1]
                                           + ("A" if k.gold.secret[-1] != "A"
                                              else "B"))],
                               401, {"WRONG_SECRET"}),
    "revoked": (lambda k: [k.revoked.bearer()], 401, {"REVOKED"}),
    "revoked_x_api_key": (lambda k: [k.revoked.x_api_key()], 401,
                          {"REVOKED"}),
    "expired": (lambda k: [k.expired.bearer()], 401, {"EXPIRED"}),
    "expired_x_api_key": (lambda k: [k.expired.x_api_key()], 401,
                          {"EXPIRED"}),
    # more than one credential
    "two_x_api_key_identical": (lambda k: [k.gold.x_api_key(),
                                           k.gold.x_api_key()],
                                400, {"AMBIGUOUS"}),
    "empty_and_valid_x_api_key": (lambda k: [("X-API-Key", ""),
                                             k.gold.x_api_key()],
                                  400, {"AMBIGUOUS"}),
    "empty_authorization_and_x_api_key": (lambda k: [("Authorization", ""),
                                                     k.gold.x_api_key()],
                                          400, {"AMBIGUOUS"}),
    "two_x_api_key_different": (lambda k: [k.gold.x_api_key(),
                                           k.other.x_api_key()],
                                400, {"AMBIGUOUS"}),
    "bearer_and_other_x_api_key": (lambda k: [k.gold.bearer(),
                                              k.other.x_api_key()],
                                   400, {"AMBIGUOUS"}),
    "x_api_key_and_other_bearer": (lambda k: [k.gold.x_api_key(),
                                              k.other.bearer()],
                                   400, {"AMBIGUOUS"}),
    "basic_and_x_api_key": (lambda k: [_basic(), k.gold.x_api_key()],
                            400, {"AMBIGUOUS"}),
    "bearer_and_same_id_other_secret": (
        lambda k: [k.gold.bearer(),
                   ("X-API-Key", k.gold.key_id + ":" + k.other.secret)],
        400, {"AMBIGUOUS"}),
    "bad_bearer_and_good_x_api_key": (
        lambda k: [("Authorization", "Bearer garbage"), k.gold.x_api_key()],
        400, {"AMBIGUOUS"}),
}


def test_refusals(start_nginx, upstream, keys):
    """Every refusal kind, each twice: status, problem body, headers, the
    logged decision, and nothing reaches the upstream.  All 401s are
    byte-identical apart from the request id."""
    ngx = start_nginx(toll_log=True)
    shapes_401 = {}
    request_ids = set()
    for round_ in range(2):
        for name in sorted(REFUSAL_CASES):
            build, status, auth = REFUSAL_CASES[name]
            r, t = send(ngx, build(keys))
            code = "unauthorized" if status == 401 else \
                "ambiguous_credentials"
            doc = check_problem(r, status, code)
            assert doc["request_id"] not in request_ids
            request_ids.add(doc["request_id"])
            assert upstream.count == 0, (name, upstream.requests)
            lines = ngx.wait_toll_log(t)
            assert len(lines) == 1, (name, lines)
            assert lines[0]["auth"] in auth, (name, lines[0])
            assert lines[0]["status"] == str(status), (name, lines[0])
            assert lines[0]["rid"] == doc["request_id"], (name, lines[0])
            assert lines[0]["buyer"] == "-", (name, lines[0])
            if status == 401:
                shapes_401.setdefault(without_request_id(r), []).append(
                    name)
    assert len(shapes_401) == 1, \
        "401 answers differ between kinds: %r" % list(shapes_401.values())


def test_two_authorization_headers(start_nginx, upstream, keys):
    """nginx 1.22 refuses a duplicate Authorization itself (plain 400)
    before any module runs; whatever answers, nothing passes."""
    ngx = start_nginx()
    for hdrs in ([keys.gold.bearer(), keys.other.bearer()],
                 [keys.gold.bearer(), keys.gold.bearer()],
                 [keys.gold.bearer(), _basic()]):
        for _ in range(2):
            r, _ = send(ngx, hdrs)
            assert r.status == 400, r
    assert upstream.count == 0


# ------------------------------------------------------------- expiry

def test_expiry(start_nginx, upstream, redis_server):
    ngx = start_nginx(toll_log=True)
    now = int(time.time())
    past = raw_key(redis_server, expires_at=now - 1)
    future = raw_key(redis_server, expires_at=now + 3600)
    never = raw_key(redis_server, expires_at=0)
    for _ in range(2):
        r, t = send(ngx, [past.bearer()])
        check_problem(r, 401, "unauthorized")
        assert ngx.wait_toll_log(t)[0]["auth"] == "EXPIRED"
        for k in (future, never):
            r, _ = send(ngx, [k.bearer()])
            assert r.status == 200, r
    assert upstream.count == 4


def test_cached_key_expires_on_time(start_nginx, upstream, redis_server):
    """A cached record does not outlive its expires_at: the key stops
    working at expiry, long before the 30 s cache TTL."""
    ngx = start_nginx(toll_log=True, http_extra="toll_cache_ttl 30s;")
    expires_at = int(time.time()) + 2
    k = raw_key(redis_server, expires_at=expires_at)
    r, _ = send(ngx, [k.bearer()])
    assert r.status == 200, r
    lookups = redis_server.lookups()

    def refused():
        r, t = send(ngx, [k.bearer()])
        if r.status == 200:
            return None
        return r, t

    r, t = wait_for(refused, expires_at + 2.0 - time.time(),
                    what="the key to expire")
    assert time.time() >= expires_at - 1
    check_problem(r, 401, "unauthorized")
    assert ngx.wait_toll_log(t)[0]["auth"] == "EXPIRED"
    # decided from the cached record
    assert redis_server.lookups() == lookups


# ------------------------------------------------------------- caching

def test_revocation_within_cache_ttl(start_nginx, upstream, redis_server):
    ttl = 2.0
    ngx = start_nginx(toll_log=True, http_extra="toll_cache_ttl 2s;")
    k = raw_key(redis_server, owner="acme", plan="gold")
    before = redis_server.lookups()
    r, _ = send(ngx, [k.bearer()])
    assert r.status == 200, r
    assert redis_server.lookups() - before >= 1, "first use must read Redis"
    cached_at = time.monotonic()

    redis_server.client.hset(redis_name(k.key_id), "status", "revoked")
    after_revoke = redis_server.lookups()
    # still served from the cache: no Redis read, still allowed
    r, _ = send(ngx, [k.bearer()])
    assert time.monotonic() - cached_at < ttl / 2, "test too slow to tell"
    assert r.status == 200, r
    assert redis_server.lookups() == after_revoke, \
        "a cached key was looked up in Redis again"

    def refused():
        r, t = send(ngx, [k.bearer()])
        return (r, t) if r.status != 200 else None

    r, t = wait_for(refused, ttl + 1.5, what="revocation to take effect")
    check_problem(r, 401, "unauthorized")
    assert ngx.wait_toll_log(t)[0]["auth"] == "REVOKED"
    assert time.monotonic() - cached_at >= ttl * 0.9, \
        "revocation seen before the cache TTL: was the key cached at all?"
    for _ in range(3):
        r, _ = send(ngx, [k.bearer()])
        check_problem(r, 401, "unauthorized")


def test_revocation_with_tollctl(start_nginx, upstream, redis_server):
    ngx = start_nginx(http_extra="toll_cache_ttl 1s;")
    k = make_key(redis_server, owner="acme", plan="gold", role="buyer")
    for _ in range(2):
        r, _ = send(ngx, [k.bearer()])
        assert r.status == 200, r
        assert_identity(upstream.last, k)
    revoke_key(redis_server, k)
    t0 = time.monotonic()
    wait_for(lambda: send(ngx, [k.bearer()])[0].status == 401, 1 + 1.5,
             what="tollctl revoke to take effect")
    assert time.monotonic() - t0 < 2.5


def test_negative_cache(start_nginx, upstream, redis_server):
    neg_ttl = 2.0
    ngx = start_nginx(toll_log=True, http_extra="toll_cache_negative_ttl 2s;")
    key_id, secret = gen_key_id(), gen_secret()
    cred = [("X-API-Key", key_id + ":" + secret)]

    l0 = redis_server.lookups()
    r, t = send(ngx, cred)
    check_problem(r, 401, "unauthorized")
    t_first = time.monotonic()
    assert ngx.wait_toll_log(t)[0]["auth"] == "UNKNOWN"
    l1 = redis_server.lookups()
    # lookups() counts key reads (keyspace hits + misses), whatever the
    # command: one record, one read
    assert l1 - l0 == 1, "unknown key read %d times from Redis" % (l1 - l0)

    r, t = send(ngx, cred)
    check_problem(r, 401, "unauthorized")
    assert ngx.wait_toll_log(t)[0]["auth"] == "UNKNOWN"
    assert redis_server.lookups() == l1, \
        "unknown key looked up again within the negative TTL"

    # the key appears: the negative entry hides it until its TTL ends
    k = raw_key(redis_server, key_id=key_id, secret=secret, owner="late")
    r, _ = send(ngx, cred)
    if time.monotonic() - t_first < neg_ttl / 2:
        assert r.status == 401, "negative entry not used"
    wait_for(lambda: send(ngx, cred)[0].status == 200, neg_ttl + 1.5,
             what="the new key to be seen after the negative TTL")
    assert_identity(upstream.last, k)


def test_wrong_secret_does_not_poison_cache(start_nginx, upstream, keys):
    ngx = start_nginx()
    k = keys.gold
    for _ in range(2):
        r, _ = send(ngx, [("X-API-Key", k.key_id + ":" + keys.other.secret)])
        check_problem(r, 401, "unauthorized")
        r, _ = send(ngx, [k.x_api_key()])
        assert r.status == 200, r


# ------------------------------------------------------------- redirects

REDIRECT_LOCATIONS = """
        location /ep/ {
            toll on;
            root html;
            error_page 404 = @backend;
        }
        location /tf/ {
            toll on;
            try_files $uri @backend;
        }
        location @backend {
            toll on;
            %(proxy)s
        }
        location /ix/ {
            toll on;
            root html;
            index index.json;
        }
        location ~ ^/ix/.*\\.json$ {
            toll on;
            %(proxy)s
        }
""" % {"proxy": PROXY}

REDIRECTS = {
    "error_page": ("/ep/missing", "/ep/missing"),
    "try_files": ("/tf/missing", "/tf/missing"),
    "index": ("/ix/", "/ix/index.json"),
}


@pytest.mark.parametrize("kind", sorted(REDIRECTS))
@pytest.mark.parametrize("pass_credentials", ["off", "on"])
def test_internal_redirect_authenticates_once(start_nginx, upstream, keys,
                                              kind, pass_credentials):
    ngx = start_nginx(toll_log=True, locations=REDIRECT_LOCATIONS,
                      http_extra="toll_pass_credentials %s;"
                      % pass_credentials)
    os.makedirs(os.path.join(ngx.prefix, "html", "ix"), exist_ok=True)
    with open(os.path.join(ngx.prefix, "html", "ix", "index.json"), "w") as f:
        f.write("{}")
    path, upstream_path = REDIRECTS[kind]
    refused = 0
    for key in (keys.gold, keys.noplan) * 2:
        for cred in (key.bearer(), key.x_api_key()):
            upstream.reset()
            r, t = send(ngx, [cred], path=path)
            assert r.status == 200, (kind, r, r.body)
            assert upstream.count == 1
            req = upstream.last
            assert req["path"] == upstream_path
            assert_identity(req, key)
            lines = ngx.wait_toll_log(t)
            assert len(lines) == 1 and lines[0]["auth"] == "OK", lines
        # and refusals still refuse, once
        r, t = send(ngx, [], path=path)
        check_problem(r, 401, "unauthorized")
        assert upstream.count == 1
        refused += 1
    # one decision logged per refused request, none for the passed ones
    wait_for(lambda: len(refusal_lines(ngx)) >= refused, 5,
             what="rejections to be logged")
    assert len(refusal_lines(ngx)) == refused, refusal_lines(ngx)


def refusal_lines(ngx):
    """The gate's own rejection lines: logged through the request, so
    they carry nginx's ', request: "..."' context."""
    return [l for l in ngx.error_log_text().splitlines()
            if "toll" in l and 'request: "' in l
            and "client closed" not in l]


# ------------------------------------------------------------- open paths

def test_toll_off_location_stays_open(start_nginx, upstream):
    ngx = start_nginx(server_extra="        toll on;", locations="""
        location /free/ {
            toll off;
            %s
        }
        location /gated/ {
            %s
        }
        location /open/ {
            %s
        }
    """ % (PROXY, PROXY, PROXY))
    for _ in range(2):
        upstream.reset()
        r, _ = send(ngx, path="/free/x")
        assert r.status == 200, r
        r, _ = send(ngx, path="/gated/x")
        check_problem(r, 401, "unauthorized")
        assert upstream.count == 1
        req = upstream.last
        assert req["path"] == "/free/x"
        assert not [k for k, _ in req["headers"]
                    if k.lower().startswith("x-toll-")], req["headers"]
    # without any toll directive in the server: open
    ngx2 = start_nginx(locations="location / { %s }" % PROXY)
    upstream.reset()
    r, _ = send(ngx2, path="/anything")
    assert r.status == 200 and upstream.count == 1


# ------------------------------------------------------------- logging

@pytest.mark.parametrize("level", ["info", "notice", "warn", "error"])
def test_rejection_log_level(start_nginx, upstream, level):
    extra = "" if level == "info" else "toll_log_level %s;" % level
    ngx = start_nginx(http_extra=extra)
    marker = "/reject-" + uuid.uuid4().hex
    r, _ = send(ngx, path=marker)
    check_problem(r, 401, "unauthorized")

    def line():
        return [l for l in ngx.error_log_text().splitlines() if marker in l]

    lines = wait_for(line, 5, what="the rejection to be logged")
    assert len(lines) == 1, lines
    assert "[%s]" % level in lines[0], lines


def _line_with(blob, frag):
    return [l for l in blob.splitlines() if frag in l][:3]


def test_secrets_never_leak(start_nginx, upstream, redis_server, keys):
    """Neither a secret (stored or presented) nor its SHA-256 shows up in
    any answer or any log, whatever the outcome."""
    ngx = start_nginx(toll_log=True, http_extra="""
    toll_log_level warn;
    log_format full '$request $status $http_x_test_tag $toll_key_id '
                    '$toll_buyer $toll_plan $toll_auth_status';
    access_log logs/full.log full;
""")
    g, o = keys.gold, keys.other
    presented = gen_secret()
    reqs = [
        [g.bearer()], [g.x_api_key()], [g.bearer(), g.x_api_key()],
        [("X-API-Key", g.key_id + ":" + presented)],
        [("Authorization", "Bearer " + g.key_id + ":" + o.secret)],
        [("Authorization", "Bearer " + g.secret)],
        [("X-API-Key", g.secret)],
        [("X-API-Key", ":" + g.secret)],
        [g.bearer(), o.x_api_key()],
        [g.x_api_key(), g.x_api_key()],
        [keys.revoked.bearer()], [keys.expired.x_api_key()],
        [("X-API-Key", gen_key_id() + ":" + presented)],
    ]
    texts = []
    for _ in range(2):
        for hdrs in reqs:
            r, _ = send(ngx, hdrs, path="/api/secret-test")
            texts.append(r.raw_head.decode("latin-1"))
            texts.append(r.body.decode("latin-1"))
    ngx.stop()
    texts.append(ngx.logs_text())
    blob = "\n".join(texts)
    assert g.key_id in blob  # the logs are there to be searched
    for s in (g.secret, o.secret, keys.revoked.secret, keys.expired.secret,
              presented):
        for frag in {s[i:i + 12] for i in range(0, len(s) - 11)}:
            assert frag not in blob, "secret fragment %r leaked in: %s" % (
                frag, _line_with(blob, frag))
    for s in (g.secret, o.secret, keys.revoked.secret, keys.expired.secret,
              presented):
        h = hashlib.sha256(s.encode()).hexdigest()
        for frag in {h[i:i + 16] for i in range(0, 49)}:
            assert frag not in blob.lower(), \
                "hash fragment %r leaked in: %s" % (
                    frag, _line_with(blob.lower(), frag))


# ------------------------------------------------------------- odd records

def _odd(redis_server, fields_update=None, drop=(), raw=None):
    """A key whose record in Redis is damaged; returns its credential."""
    k = raw_key(redis_server, owner="odd", plan="gold")
    name = redis_name(k.key_id)
    if raw is not None:
        redis_server.client.delete(name)
        raw(redis_server.client, name)
    for f in drop:
        redis_server.client.hdel(name, f)
    if fields_update:
        redis_server.client.hset(name, mapping=fields_update)
    return k


ODD_RECORDS = {
    "no_secret_hash": dict(drop=("secret_sha256",)),
    "short_secret_hash": dict(fields_update={"secret_sha256": "a" * 63}),
    "long_secret_hash": dict(fields_update={"secret_sha256": "a" * 65}),
    "non_hex_secret_hash": dict(fields_update={"secret_sha256": "g" * 64}),
    "no_status": dict(drop=("status",)),
    "unknown_status": dict(fields_update={"status": "suspended"}),
    "status_with_space": dict(fields_update={"status": "active "}),
    "bad_expires_at": dict(fields_update={"expires_at": "soon"}),
    "negative_expires_at": dict(fields_update={"expires_at": "-5"}),
    "huge_expires_at": dict(fields_update={"expires_at": "9" * 40}),
    "owner_100k": dict(fields_update={"owner": "o" * 100000}),
    "plan_100k": dict(fields_update={"plan": "p" * 100000}),
    "owner_with_crlf": dict(fields_update={"owner":
                                           "evil\r\nX-Toll-Buyer: x"}),
    "plan_with_crlf": dict(fields_update={"plan": "gold\r\nX-Admin: 1"}),
    "string_not_hash": dict(raw=lambda c, n: c.set(n, "x" * 10)),
    "list_not_hash": dict(raw=lambda c, n: c.rpush(n, "a", "b")),
}


def test_odd_records_fail_closed(start_nginx, upstream, redis_server):
    """A damaged record never lets a request through (its correct secret
    is presented), is answered as a refusal or a store problem, and does
    not stall the Redis connection for the next request.  A reply over
    64 KiB is among them (owner_100k, plan_100k)."""
    ngx = start_nginx()
    passed = []
    for name in sorted(ODD_RECORDS):
        k = _odd(redis_server, **ODD_RECORDS[name])
        for _ in range(2):
            upstream.reset()
            r, _ = send(ngx, [k.bearer()])
            if r.status == 200:
                req = upstream.last
                # a record the gate accepts must still give sane headers
                passed.append((name, [(h, v[:40]) for h, v in req["headers"]
                                      if h.lower().startswith("x-toll")]))
                continue
            assert r.status in (401, 503), (name, r, r.body)
            check_problem(r, r.status, "unauthorized" if r.status == 401
                          else "store_unavailable")
            assert upstream.count == 0
        # the connection to Redis still answers at once
        good = raw_key(redis_server, owner="after-" + name)
        r, _ = send(ngx, [good.x_api_key()])
        assert r.status == 200, (name, r)
        assert r.elapsed < 0.5, (name, r)
    assert not passed, "damaged records let requests through: %r" % passed
