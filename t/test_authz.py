"""Scopes and roles (issue 17, item 1): toll_require answered 403
forbidden, after a 401 for a bad credential and before limits and price,
so that a 403 costs nothing; scopes and roles from the key record and from
JWT claims, sent upstream as X-Toll-Role and X-Toll-Scopes."""

import json
import re
import time

import pytest

from helpers import client
from helpers import jwt as J
from helpers.keys import make_key, raw_key, tollctl
from helpers.meter import meter_http, usage, free_claimed
from helpers.problem import check_problem
from helpers.procs import PROXY, wait_for
from helpers.upstream import header_values


def bearer(tok):
    return [("Authorization", "Bearer " + tok)]


def now():
    return int(time.time())


def get(ngx, path, headers):
    return client.request(ngx.port, path=path, headers=headers)


def forbidden(r):
    """Asserts a 403 forbidden problem answer; returns its detail.  (The
    shared check_problem() knows no 403 title yet.)"""
    assert r.status == 403, (r, r.headers, r.body)
    assert r.header("content-type") == "application/problem+json", r.headers
    doc = json.loads(r.body)
    assert set(doc) == {"type", "title", "status", "code", "detail",
                        "request_id"}, doc
    assert (doc["title"], doc["status"], doc["code"]) == (
        "Forbidden", 403, "forbidden"), doc
    assert r.header_all("x-request-id") == [doc["request_id"]], r.headers
    assert r.header("www-authenticate") is None, r.headers
    return doc["detail"]


# ------------------------------------------------------------ configuration

BAD_CONFIGS = [
    ("empty-scope", "toll_require scope=;", "invalid name"),
    ("empty-role", "toll_require role=;", "invalid name"),
    ("quote", 'toll_require "scope=a\\"b";', "invalid name"),
    ("comma", "toll_require scope=a,b;", "invalid name"),
    ("space", 'toll_require "scope=a b";', "invalid name"),
    ("long", "toll_require scope=%s;" % ("a" * 129), "invalid name"),
    ("unknown", "toll_require scopes=a;", 'invalid parameter "scopes=a"'),
    ("too-many-scopes", "toll_require %s;"
     % " ".join("scope=s%d" % i for i in range(17)), "too many scopes"),
    ("too-many-roles", "toll_require %s;"
     % " ".join("role=r%d" % i for i in range(9)), "too many roles"),
    ("duplicate", "toll_require scope=a; toll_require scope=b;",
     "is duplicate"),
    ("claim-name", 'toll_jwt_scope_claim "sc ope";', "invalid claim name"),
    ("claim-empty", 'toll_jwt_role_claim "";', "invalid claim name"),
    ("too-many-claims", "toll_jwt_scope_claim a b c d e f g h i;",
     "too many claims"),
]


def http_with(loc_text, redis_addr="127.0.0.1:1"):
    return ("toll_redis %s; toll_zone 1m;\n"
            "server { listen 127.0.0.1:1; location / { toll on; %s } }"
            % (redis_addr, loc_text))


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_refused(nginx_t, case):
    _, text, expect = case
    rc, out, _ = nginx_t(http_with(text))
    assert rc != 0, out
    assert expect in out, out


def test_good_config_accepted(nginx_t):
    rc, out, _ = nginx_t(http_with(
        "toll_require scope=read:users scope=https://x.example/.default "
        "role=admin role=provider; toll_jwt_scope_claim scp; "
        "toll_jwt_role_claim https://x.example/roles;"
        " location /in/ { toll_require off; }"))
    assert rc == 0, out


# ------------------------------------------------------------ API keys

KEY_LOCATIONS = """
        location /read/ {{
            toll on;
            toll_require scope=read;
            {proxy}
        }}
        location /rw/ {{
            toll on;
            toll_require scope=read scope=write:all;
            {proxy}
        }}
        location /admin/ {{
            toll on;
            toll_require role=admin;
            {proxy}
        }}
        location /staff/ {{
            toll on;
            toll_require scope=read role=admin role=provider;
            {proxy}
            location /staff/open/ {{
                toll_require off;
                {proxy}
            }}
        }}
        location / {{
            toll on;
            {proxy}
        }}
""".format(proxy=PROXY)


@pytest.fixture
def keygate(start_nginx):
    return start_nginx(locations=KEY_LOCATIONS,
                       http_extra="    toll_cache_ttl 1s;")


def test_bad_credential_401_before_403(keygate, redis_server, upstream):
    key = raw_key(redis_server, extra={"scopes": "read"})
    wrong = "%s:%s" % (key.key_id, "x" * 43)
    for path in ("/admin/", "/rw/"):
        check_problem(get(keygate, path, []), 401, "unauthorized")
        check_problem(get(keygate, path, [("X-API-Key", wrong)]), 401,
                      "unauthorized")
        # two credentials: 400, also before any 403
        other = raw_key(redis_server, role="admin")
        check_problem(get(keygate, path, [key.x_api_key(),
                                          other.x_api_key()]),
                      400, "ambiguous_credentials")
    assert upstream.count == 0


def test_key_scopes_and_roles(keygate, redis_server, upstream):
    key = raw_key(redis_server, extra={"scopes": "read other"})
    assert get(keygate, "/read/x", [key.x_api_key()]).status == 200
    assert get(keygate, "/x", [key.x_api_key()]).status == 200

    detail = forbidden(get(keygate, "/rw/x", [key.x_api_key()]))
    assert detail == "missing scopes: write:all", detail

    detail = forbidden(get(keygate, "/admin/x", [key.x_api_key()]))
    assert detail == "needs one of the roles: admin", detail

    detail = forbidden(get(keygate, "/staff/x", [key.x_api_key()]))
    assert detail == "needs one of the roles: admin provider", detail
    # an inner location that asks for nothing
    assert get(keygate, "/staff/open/x", [key.x_api_key()]).status == 200

    prov = raw_key(redis_server, role="provider")
    detail = forbidden(get(keygate, "/staff/x", [prov.x_api_key()]))
    assert detail == "missing scopes: read", detail
    detail = forbidden(get(keygate, "/rw/x", [prov.x_api_key()]))
    assert detail == "missing scopes: read write:all", detail

    admin = raw_key(redis_server, role="admin",
                    extra={"scopes": "write:all read"})
    for path in ("/read/", "/rw/", "/admin/", "/staff/"):
        assert get(keygate, path, [admin.x_api_key()]).status == 200, path
    assert upstream.count == 7


def test_scope_is_a_whole_name(keygate, redis_server):
    # "reader" and "rea" are not "read"; no prefix or substring matching
    for scopes in ("reader", "rea", "xread", "read:x"):
        key = raw_key(redis_server, extra={"scopes": scopes})
        forbidden(get(keygate, "/read/", [key.x_api_key()]))


@pytest.mark.allow_log(r"is invalid: scopes")
def test_invalid_scopes_field_refuses_the_key(keygate, redis_server):
    # a record that breaks a rule is refused like an unknown key
    for bad in ("read  write", " read", "read ", 'a"b', "a,b",
                " ".join("s%d" % i for i in range(65))):
        key = raw_key(redis_server, extra={"scopes": bad})
        check_problem(get(keygate, "/x", [key.x_api_key()]), 401,
                      "unauthorized")


def test_headers_to_upstream(keygate, redis_server, upstream):
    key = raw_key(redis_server, role="admin", extra={"scopes": "read b:c"})
    spoof = [("X-Toll-Role", "root"), ("X-Toll-Scopes", "everything"),
             ("x-toll-role", "root2")]
    r = get(keygate, "/admin/", [key.x_api_key()] + spoof)
    assert r.status == 200
    req = upstream.requests[-1]
    assert header_values(req, "X-Toll-Role") == ["admin"]
    assert header_values(req, "X-Toll-Scopes") == ["read b:c"]

    # no scopes: no X-Toll-Scopes, and the client's copy is still removed
    plain = raw_key(redis_server)
    r = get(keygate, "/x", [plain.x_api_key()] + spoof)
    assert r.status == 200
    req = upstream.requests[-1]
    assert header_values(req, "X-Toll-Role") == ["buyer"]
    assert header_values(req, "X-Toll-Scopes") == []

    # the cached record says the same (the first answers came from Redis)
    r = get(keygate, "/admin/", [key.x_api_key()] + spoof)
    req = upstream.requests[-1]
    assert header_values(req, "X-Toll-Scopes") == ["read b:c"]
    assert header_values(req, "X-Toll-Role") == ["admin"]


def test_key_update_takes_effect_within_cache_ttl(keygate, redis_server):
    key = make_key(redis_server)
    out = json.loads(tollctl(redis_server, "key", "show",
                             key.key_id).stdout)
    assert "scopes" not in out, out
    h = [key.x_api_key()]
    forbidden(get(keygate, "/rw/", h))
    forbidden(get(keygate, "/admin/", h))

    r = tollctl(redis_server, "key", "update", key.key_id,
                "--scopes", "read,write:all", "--role", "admin")
    doc = json.loads(r.stdout)
    assert doc["scopes"] == "read write:all" and doc["role"] == "admin", doc

    # cached for toll_cache_ttl (1s here), then read again
    def allowed():
        return (get(keygate, "/rw/", h).status == 200
                and get(keygate, "/admin/", h).status == 200)
    wait_for(allowed, 5, interval=0.2, what="the update seen")

    tollctl(redis_server, "key", "update", key.key_id, "--scopes", "")
    assert "scopes" not in redis_server.client.hgetall(
        "toll:key:{%s}" % key.key_id)
    wait_for(lambda: get(keygate, "/rw/", h).status == 403, 5,
             interval=0.2, what="the scopes taken back")


def test_tollctl_scopes_checked(redis_server):
    r = tollctl(redis_server, "key", "create", "--owner", "acme",
                "--scopes", "read,write")
    doc = json.loads(r.stdout)
    assert doc["scopes"] == "read write", doc
    assert redis_server.client.hget("toll:key:{%s}" % doc["key_id"],
                                    "scopes") == "read write"
    for bad in ("a b", "a,,b", ",a", 'a"', ",".join("s%d" % i
                                                   for i in range(65))):
        r = tollctl(redis_server, "key", "create", "--owner", "acme",
                    "--scopes", bad, check=False)
        assert r.returncode == 65, (bad, r.stderr)
        r = tollctl(redis_server, "key", "update", doc["key_id"],
                    "--scopes", bad, check=False)
        assert r.returncode == 65, (bad, r.stderr)
    r = tollctl(redis_server, "key", "update", "tk_nosuchkey0000",
                "--role", "admin", check=False)
    assert r.returncode == 66, r.stderr
    assert not redis_server.client.exists("toll:key:{tk_nosuchkey0000}")
    r = tollctl(redis_server, "key", "update", doc["key_id"], check=False)
    assert r.returncode == 64, r.stderr
    r = tollctl(redis_server, "key", "update", doc["key_id"], "--role",
                "root", check=False)
    assert r.returncode == 65, r.stderr
    r = tollctl(redis_server, "key", "update", doc["key_id"], "--plan",
                "pro")
    assert json.loads(r.stdout)["plan"] == "pro"
    tollctl(redis_server, "key", "update", doc["key_id"], "--plan", "")
    assert redis_server.client.hget("toll:key:{%s}" % doc["key_id"],
                                    "plan") is None


# ------------------------------------------------------------ costs nothing

COST_LOCATIONS = """
        location /paid/ {{
            toll on;
            toll_service paid provider=acme price=0.05 free_calls=1;
            toll_require scope=paid;
            {proxy}
        }}
        location /cheap/ {{
            toll on;
            toll_service paid provider=acme price=0.05 free_calls=1;
            {proxy}
        }}
        location /pre/ {{
            toll on;
            toll_prepaid on;
            toll_service pre provider=acme price=0.05;
            toll_require role=admin;
            {proxy}
        }}
        location /go/ {{
            toll on;
            toll_prepaid on;
            toll_service go provider=acme price=0.05;
            try_files /nonexistent @admin;
        }}
        location @admin {{
            toll on;
            toll_require role=admin;
            {proxy}
        }}
        location = /toll/metrics {{
            toll_metrics;
        }}
""".format(proxy=PROXY)


@pytest.fixture
def costgate(start_nginx):
    return start_nginx(locations=COST_LOCATIONS, http_extra=(
        meter_http() + "    toll_plan two rate=2r/m;\n"
        "    toll_default_plan two;\n"))


def test_403_costs_nothing(costgate, redis_server, upstream):
    rc = redis_server.client
    key = raw_key(redis_server, owner="cheapo", extra={"scopes": "read"})
    for _ in range(5):
        r = get(costgate, "/paid/x", [key.x_api_key()])
        forbidden(r)
        # no billing or limit headers: nothing was priced or counted
        assert r.header("x-toll-amount") is None, r.headers
        assert r.header("ratelimit") is None, r.headers
        assert r.header("x-ratelimit-remaining") is None, r.headers
    assert upstream.count == 0
    # the limit (2 a minute) and the free call are untouched by the 403s
    r1 = get(costgate, "/cheap/x", [key.x_api_key()])
    r2 = get(costgate, "/cheap/x", [key.x_api_key()])
    assert (r1.status, r2.status) == (200, 200)
    assert r1.header("x-toll-free-tier") == "true", r1.headers
    assert r2.header("x-toll-free-tier") == "false", r2.headers
    assert get(costgate, "/cheap/x", [key.x_api_key()]).status == 429

    def metered():
        u = usage(rc)
        return u.get(("cheapo", "paid"), {}).get("calls") == 2
    wait_for(metered, 10, interval=0.2, what="the two calls metered")
    time.sleep(0.5)                          # another flush: still two
    assert usage(rc)[("cheapo", "paid")]["calls"] == 2
    assert free_claimed(rc, "cheapo", "paid") <= 1


def test_403_holds_no_balance(costgate, redis_server, upstream):
    from helpers.balance import balance, credit
    rc = redis_server.client
    credit(rc, "prebuyer", 100000)
    key = raw_key(redis_server, owner="prebuyer")
    before = balance(rc, "prebuyer")
    for _ in range(3):
        forbidden(get(costgate, "/pre/x", [key.x_api_key()]))
    time.sleep(0.5)
    assert balance(rc, "prebuyer") == before
    assert upstream.count == 0


def test_403_after_internal_redirect(costgate, redis_server, upstream):
    """/go/ passes the gate, is priced, then try_files sends it to a
    location asking for admin: the new location decides, and the price of
    the first one is taken back, its hold on the balance at once."""
    from helpers.balance import balance, credit, invariant
    rc = redis_server.client
    credit(rc, "redirected", 50000)          # one call's price
    credit(rc, "boss", 100000)
    buyer = raw_key(redis_server, owner="redirected")
    for _ in range(2):                       # the plan allows 2 a minute
        forbidden(get(costgate, "/go/x", [buyer.x_api_key()]))
    assert upstream.count == 0
    admin = raw_key(redis_server, owner="boss", role="admin")
    assert get(costgate, "/go/x", [admin.x_api_key()]).status == 200
    assert upstream.count == 1

    def metered():
        return usage(rc).get(("boss", "go"), {}).get("calls") == 1
    wait_for(metered, 10, interval=0.2, what="the admin's call metered")

    def settled():
        b = balance(rc, "boss")
        return b.get("spent") == 50000 and b.get("held", 0) == 0
    wait_for(settled, 15, interval=0.2, what="the admin's call paid")
    time.sleep(0.5)
    assert ("redirected", "go") not in usage(rc)
    # the hold of the first was given back: the second was not refused
    # 402 for want of balance, and nothing was spent ("held" is the
    # node's lease, not a call's hold)
    b = balance(rc, "redirected")
    assert b.get("spent", 0) == 0, b
    invariant(rc, "redirected")


def test_forbidden_counted(costgate, redis_server):
    key = raw_key(redis_server)
    for _ in range(3):
        forbidden(get(costgate, "/paid/x", [key.x_api_key()]))
    text = get(costgate, "/toll/metrics", []).body.decode()
    n = 0
    for line in text.splitlines():
        if (line.startswith("toll_requests_total{")
                and 'decision="forbidden"' in line):
            n += int(float(line.rsplit(" ", 1)[1]))
    assert n == 3, [ln for ln in text.splitlines() if "forbidden" in ln]


# ------------------------------------------------------------ JWT claims

def jwt_http(keys, extra=""):
    return "\n".join([
        keys.directives(),
        "    toll_jwt on;",
        "    toll_jwt_issuer %s;" % J.ISSUER,
        "    toll_jwt_audience %s;" % J.AUDIENCE,
        "    toll_plan free unlimited;",
        "    toll_default_plan free;",
        # so that toll, not nginx's header buffers, meets a huge token
        "    large_client_header_buffers 4 64k;",
        extra,
    ])


JWT_LOCATIONS = """
        location /read/ {{
            toll on;
            toll_require scope=read;
            {proxy}
        }}
        location /rw/ {{
            toll on;
            toll_require scope=read scope=write;
            {proxy}
        }}
        location /admin/ {{
            toll on;
            toll_require role=admin;
            {proxy}
        }}
        location /perms/ {{
            toll on;
            toll_jwt_scope_claim perms;
            toll_jwt_role_claim https://example.com/roles;
            toll_require scope=read;
            {proxy}
        }}
        location /perms-admin/ {{
            toll on;
            toll_jwt_scope_claim perms;
            toll_jwt_role_claim https://example.com/roles;
            toll_require role=admin;
            {proxy}
        }}
        location / {{
            toll on;
            {proxy}
        }}
""".format(proxy=PROXY)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return J.Keys(tmp_path_factory.mktemp("authzkeys"))


@pytest.fixture
def jwtgate(start_nginx, keys):
    return start_nginx(http_extra=jwt_http(keys), locations=JWT_LOCATIONS)


def tok(keys, **claims):
    return J.token(keys, "RS256", J.claims(now(), **claims))


def test_jwt_claims_grant(jwtgate, keys, upstream):
    cases = [
        # (claims, path, status)
        (dict(scope="read write"), "/rw/", 200),
        (dict(scope="  read   write "), "/rw/", 200),
        (dict(scp=["read", "write"]), "/rw/", 200),
        (dict(permissions=["read"], scope="write"), "/rw/", 200),
        (dict(scope="read"), "/rw/", 403),
        (dict(roles=["editor", "admin"]), "/admin/", 200),
        (dict(role="admin"), "/admin/", 200),
        (dict(role="admin editor"), "/admin/", 200),
        (dict(roles=["administrator"]), "/admin/", 403),
        (dict(), "/admin/", 403),
        (dict(), "/read/", 403),
        (dict(), "/x", 200),
    ]
    for c, path, status in cases:
        r = get(jwtgate, path, bearer(tok(keys, **c)))
        assert r.status == status, (c, path, r)
        if status == 403:
            forbidden(r)


def test_jwt_wrong_type_claims_give_nothing(jwtgate, keys, upstream):
    """A claim that is no list of names gives no scopes or roles from
    that claim; the token is still valid, another claim still counts."""
    wrong = [123, 1.5, True, {"read": True}, ["read", 7], [["read"]],
             [None, "read"], [{"a": "read"}]]
    for v in wrong:
        for name in ("scope", "scp", "permissions"):
            r = get(jwtgate, "/read/", bearer(tok(keys, **{name: v})))
            assert forbidden(r) == "missing scopes: read", (name, v)
            # the same token where nothing is required: valid
            assert get(jwtgate, "/x", bearer(tok(keys, **{name: v}))
                       ).status == 200
        r = get(jwtgate, "/admin/", bearer(tok(keys, roles=v)))
        forbidden(r)
    # the wrong one ignored, the right one read
    r = get(jwtgate, "/read/", bearer(tok(keys, scope=5, scp=["read"])))
    assert r.status == 200
    # names outside the token set are skipped, not forwarded
    r = get(jwtgate, "/read/", bearer(tok(keys, scope='read "x" a,b <y>')))
    assert r.status == 200
    assert header_values(upstream.requests[-1], "X-Toll-Scopes") == ["read"]


def test_jwt_oversized_claims(jwtgate, keys, upstream):
    before = upstream.count
    # 10,000 elements: longer than any token toll reads (8 KB): 401
    t = tok(keys, scp=["s"] * 10000)
    assert len(t) > 8192
    check_problem(get(jwtgate, "/x", bearer(t)), 401, "unauthorized")
    assert upstream.count == before
    # more than the bounds, in tokens that fit: no scopes and no roles at
    # all (never a list cut short), a valid token all the same
    over = [
        dict(scp=["s"] * 300, roles=["admin"]),       # > 256 elements
        dict(scope=" ".join("s%d" % i for i in range(65)) + " read",
             roles=["admin"]),                        # > 64 scopes
        dict(scope="read", roles=["r%d" % i for i in range(16)] + ["admin"]),
        dict(scope="x" * 5000 + " read", roles=["admin"]),   # > 4096 bytes
    ]
    for c in over:
        t = tok(keys, **c)
        assert len(t) < 8192
        r = get(jwtgate, "/x", bearer(t))
        assert r.status == 200, (c, r)
        req = upstream.requests[-1]
        assert header_values(req, "X-Toll-Scopes") == [], c
        assert header_values(req, "X-Toll-Role") == [], c
        assert forbidden(get(jwtgate, "/read/", bearer(t))) \
            == "missing scopes: read", c
        forbidden(get(jwtgate, "/admin/", bearer(t)))
    # at the bounds: fine
    t = tok(keys, scope=" ".join("s%d" % i for i in range(64)),
            roles=["r%d" % i for i in range(16)])
    r = get(jwtgate, "/x", bearer(t))
    assert r.status == 200, r
    assert len(header_values(upstream.requests[-1], "X-Toll-Scopes")[0]
               .split(" ")) == 64


def test_jwt_headers_and_cache(jwtgate, keys, upstream):
    t = tok(keys, scope="read", roles=["admin", "editor"])
    spoof = [("X-Toll-Role", "root"), ("X-Toll-Scopes", "everything")]
    for _ in range(2):                       # verified, then from the cache
        r = get(jwtgate, "/admin/", bearer(t) + spoof)
        assert r.status == 200
        req = upstream.requests[-1]
        assert header_values(req, "X-Toll-Role") == ["admin editor"]
        assert header_values(req, "X-Toll-Scopes") == ["read"]
    # no role claim: no X-Toll-Role, the client's copy still removed
    r = get(jwtgate, "/x", bearer(tok(keys, scope="read")) + spoof)
    req = upstream.requests[-1]
    assert header_values(req, "X-Toll-Role") == []
    assert header_values(req, "X-Toll-Scopes") == ["read"]


def test_jwt_claim_names_per_location(jwtgate, keys):
    """The claim names are part of the JWT policy: a token verified (and
    cached) where "scope" counts is read again where only "perms" does."""
    t = tok(keys, scope="read", perms=["write"],
            **{"https://example.com/roles": ["admin"], "roles": ["x"]})
    assert get(jwtgate, "/read/", bearer(t)).status == 200
    assert get(jwtgate, "/read/", bearer(t)).status == 200
    assert forbidden(get(jwtgate, "/perms/", bearer(t))) == \
        "missing scopes: read"
    assert get(jwtgate, "/perms-admin/", bearer(t)).status == 200
    forbidden(get(jwtgate, "/admin/", bearer(t)))
    t2 = tok(keys, perms=["read"])
    assert get(jwtgate, "/perms/", bearer(t2)).status == 200
    forbidden(get(jwtgate, "/read/", bearer(t2)))
