"""Conformance: the Agent Marketplace (reference 002) behind toll,
configured by conf/examples/agent-marketplace.conf as it ships.

Each test names the reference's line it checks (@cites); a behaviour toll
does not match is an expected failure with its reason.
"""

import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from helpers import client
from helpers import jwt as J
from helpers.keys import make_key, tollctl
from helpers.limits import SlowUpstream
from helpers.procs import wait_for

from platform_example import Platform, cites, envelope


ISS = "https://api.agentmarketplace.com"
AUD = "agent-marketplace"


@pytest.fixture(scope="module")
def idp_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def market(start_nginx, redis_server, upstream, tmp_path, idp_key):
    p = Platform("agent-marketplace.conf", start_nginx, redis_server,
                 upstream, tmp_path)
    p.write("marketplace-idp.pem", idp_key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo))
    return p.start()


def token(idp_key, sub="org-123", scope="agents:read agents:write "
          "deployments:write", **extra):
    now = int(time.time())
    claims = {"sub": sub, "iss": ISS, "aud": AUD, "exp": now + 3600,
              "iat": now, "scope": scope}
    claims.update(extra)
    return J.pyjwt.encode(claims, idp_key, algorithm="RS256")


def get(p, headers, path="/api/v1/agents"):
    return client.request(p.port, "GET", path, headers)


def bearer(t):
    return [("Authorization", "Bearer " + t)]


@cites("002", 44, "\"sub\": \"org-123\",")
@cites("002", 49, "\"scope\": \"agents:read agents:write deployments:write\"")
def test_jwt_with_scopes_passes(market, idp_key, upstream):
    t = token(idp_key)
    for path in ("/api/v1/agents", "/api/v1/agents/x.y/runs",
                 "/api/v1/orgs/org-123/install", "/api/v1/deployments/d-1"):
        r = get(market, bearer(t), path)
        assert r.status == 200, (path, r)
    assert upstream.count == 4


@cites("002", 112, "| FORBIDDEN | 403 | Insufficient permissions |")
@cites("002", 333, "403 Forbidden - Insufficient permissions")
def test_missing_scope_403(market, idp_key, upstream):
    t = token(idp_key, scope="agents:read")
    assert get(market, bearer(t)).status == 200
    e = envelope(get(market, bearer(t), "/api/v1/orgs/org-123/install"), 403)
    assert e["code"] == "FORBIDDEN", e
    assert "deployments:write" in e["message"], e
    assert upstream.count == 1


@cites("002", 111, "| UNAUTHORIZED | 401 | Authentication failed |")
def test_401_envelope(market, idp_key):
    now = int(time.time())
    expired = token(idp_key, exp=now - 3600)
    for h in ([], bearer(expired), bearer("a.b.c")):
        e = envelope(get(market, h), 401)
        assert e["code"] == "UNAUTHORIZED", e
        assert e["message"] and e["request_id"]


@cites("002", 36, "Authorization: Bearer <jwt_token>")
@cites("002", 37, "X-API-Key: <service_account_key>")
def test_service_account_jwt_and_key(market, idp_key, redis_server,
                                     upstream):
    key = make_key(redis_server, owner="org-123")
    tollctl(redis_server, "key", "update", key.key_id, "--scopes",
            "agents:read")
    r = get(market, bearer(token(idp_key)) + [("X-API-Key", key.token)])
    assert r.status == 200, r
    # the pair is the key's: its scopes, not the token's, are checked
    e = envelope(get(market, bearer(token(idp_key)) + [("X-API-Key",
                                                          key.token)],
                     "/api/v1/orgs/org-123/install"), 403)
    assert e["code"] == "FORBIDDEN", e
    # a bad service account key fails the pair, whatever the token
    bad = key.key_id + ":" + "z" * 43
    e = envelope(get(market, bearer(token(idp_key)) + [("X-API-Key", bad)]),
                 401)
    assert e["code"] == "UNAUTHORIZED"


@cites("002", 61, "| Starter | 100 | 10 |")
@cites("002", 80, "\"code\": \"RATE_LIMIT_EXCEEDED\",")
@cites("002", 82, "\"retry_after\": 60")
def test_starter_plan_shared_by_organisation(market, idp_key, redis_server):
    # two members of one organisation: one plan, one budget of 100/min
    a = token(idp_key, sub="org-9", jti="a")
    b = token(idp_key, sub="org-9", jti="b")
    got = [get(market, bearer(a if i % 2 else b)).status for i in range(100)]
    assert got == [200] * 100, got
    r = get(market, bearer(a))
    e = envelope(r, 429)
    assert e["code"] == "RATE_LIMIT_EXCEEDED", e
    assert e["message"]
    assert isinstance(e["retry_after"], int) and e["retry_after"] >= 1, e
    assert int(r.header("Retry-After")) == e["retry_after"]
    # another organisation is not touched
    assert get(market, bearer(token(idp_key, sub="org-10"))).status == 200


@cites("002", 62, "| Pro | 1,000 | 100 |")
@cites("002", 68, "X-RateLimit-Limit: 1000")
@cites("002", 69, "X-RateLimit-Remaining: 999")
@cites("002", 70, "X-RateLimit-Reset: 1735603260")
def test_pro_plan_from_buyer_record_and_headers(market, idp_key,
                                                redis_server):
    tollctl(redis_server, "buyer", "set-plan", "org-pro", "pro")
    r = get(market, bearer(token(idp_key, sub="org-pro")))
    assert r.status == 200, r
    assert r.header("X-RateLimit-Limit") == "1000"
    assert r.header("X-RateLimit-Remaining") == "999"
    reset = int(r.header("X-RateLimit-Reset"))
    # the window's end, rounded up to a whole second (docs/limits.md)
    assert time.time() <= reset <= time.time() + 62


@cites("002", 61, "| Starter | 100 | 10 |")
def test_concurrency_10_per_organisation(start_nginx, redis_server, tmp_path,
                                         idp_key):
    slow = SlowUpstream()
    try:
        p = Platform("agent-marketplace.conf", start_nginx, redis_server,
                     slow, tmp_path)
        p.write("marketplace-idp.pem", idp_key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo))
        p.start()
        a = token(idp_key, sub="org-busy", jti="a")
        b = token(idp_key, sub="org-busy", jti="b")
        out = []

        def one(t):
            out.append(get(p, bearer(t), "/api/v1/agents/hold").status)

        threads = [threading.Thread(target=one, args=(a if i % 2 else b,))
                   for i in range(10)]
        for th in threads:
            th.start()
        wait_for(lambda: slow.held() == 10, 10, what="10 calls held")
        # the 11th, by either member, waits for one of the ten
        e = envelope(get(p, bearer(a), "/api/v1/agents"), 429)
        assert e["code"] == "RATE_LIMIT_EXCEEDED", e
        slow.release()
        for th in threads:
            th.join()
        assert out == [200] * 10, out
        assert get(p, bearer(b), "/api/v1/agents").status == 200
    finally:
        slow.close()
