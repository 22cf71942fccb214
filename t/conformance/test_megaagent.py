"""Conformance: MegaAgent (reference 000) behind toll, configured by
conf/examples/megaagent.conf as it ships.

Each test names the reference's line it checks (@cites); a behaviour toll
does not match is an expected failure with its reason.
"""

import re
import time

import pytest

from helpers import client
from helpers import jwt as J
from helpers.keys import make_key

from platform_example import Platform, cites, envelope


SECRET = b"megaagent-login-service-hs256-secret-0123456789"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture
def mega(start_nginx, redis_server, upstream, tmp_path):
    p = Platform("megaagent.conf", start_nginx, redis_server, upstream,
                 tmp_path)
    p.write("megaagent-jwt.key", SECRET + b"\n")
    return p.start()


def login_token(sub="user-1", tier=None, exp_in=3600):
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + exp_in}
    if tier:
        claims["tier"] = tier
    return J.pyjwt.encode(claims, SECRET, algorithm="HS256")


def get(p, headers, path="/v1/opportunities"):
    return client.request(p.port, "GET", path, headers)


@cites("000", 36, "JWT Bearer User authentication Authorization: Bearer "
       "<token>")
@cites("000", 57, "curl -H \"Authorization: Bearer <access_token>\"")
def test_jwt_bearer(mega, upstream):
    r = get(mega, [("Authorization", "Bearer " + login_token())])
    assert r.status == 200, r
    assert upstream.count == 1


@cites("000", 37, "Service Token Service-to-service X-Service-Token: "
       "<token>")
def test_service_token(mega, redis_server, upstream):
    key = make_key(redis_server, owner="billing-svc", plan="pro")
    r = get(mega, [("X-Service-Token", key.token)])
    assert r.status == 200, r
    # and the header does not travel on to the API
    names = [k.lower() for k, _ in upstream.last["headers"]]
    assert "x-service-token" not in names


@cites("000", 593, "6.1 Error Response Format")
@cites("000", 596, "\"error\": {")
@cites("000", 603, "\"request_id\": \"req_456def\",")
@cites("000", 604, "\"timestamp\": \"2024-06-12T10:30:00Z\"")
@cites("000", 611, "UNAUTHORIZED 401 Missing or invalid authentication")
def test_401_envelope(mega, upstream):
    for headers in ([], [("Authorization", "Bearer not.a.jwt")],
                    [("X-Service-Token", "tk_0000000000000000:" + "x" * 43)]):
        e = envelope(get(mega, headers), 401)
        assert e["code"] == "UNAUTHORIZED", e
        assert isinstance(e["message"], str) and e["message"]
        assert e["request_id"]
        assert ISO_Z.match(e["timestamp"]), e
    assert upstream.count == 0


@cites("000", 615, "RATE_LIMIT_EXCEEDED 429 Too many requests")
@cites("000", 649, "Free 60 10 Development")
@cites("000", 670, "retry_after = int(response.headers.get('Retry-After', "
       "60))")
def test_free_tier_burst_10(mega, upstream):
    token = login_token(sub="free-user")
    got = [get(mega, [("Authorization", "Bearer " + token)])
           for _ in range(11)]
    assert [r.status for r in got[:10]] == [200] * 10
    e = envelope(got[10], 429)
    assert e["code"] == "RATE_LIMIT_EXCEEDED", e
    assert int(got[10].header("Retry-After")) >= 1


@cites("000", 650, "Basic 600 100 Small applications")
@cites("000", 656, "HTTP/1.1 200 OK")
@cites("000", 657, "X-RateLimit-Limit: 600")
@cites("000", 658, "X-RateLimit-Remaining: 595")
@cites("000", 659, "X-RateLimit-Reset: 1718190600")
@cites("000", 660, "X-RateLimit-Burst-Limit: 100")
@cites("000", 661, "X-RateLimit-Burst-Remaining: 95")
def test_rate_limit_headers(mega):
    token = login_token(sub="basic-user", tier="basic")
    for i in range(5):
        r = get(mega, [("Authorization", "Bearer " + token)])
        assert r.status == 200
    assert r.header("X-RateLimit-Limit") == "600"
    assert r.header("X-RateLimit-Burst-Limit") == "100"
    assert r.header("X-RateLimit-Burst-Remaining") == "95"
    reset = int(r.header("X-RateLimit-Reset"))
    assert time.time() - 5 <= reset <= time.time() + 120, reset
    assert int(r.header("X-RateLimit-Remaining")) >= 95
    # only the X- family, as the reference shows
    assert r.header("RateLimit") is None


@cites("000", 652, "Enterprise Unlimited Custom High-volume")
def test_enterprise_unlimited(mega):
    token = login_token(sub="big-co", tier="enterprise")
    got = [get(mega, [("Authorization", "Bearer " + token)]).status
           for _ in range(30)]
    assert got == [200] * 30


@cites("000", 617, "SERVICE_UNAVAILABLE 503 Temporary outage")
def test_store_down_503(mega, redis_server, upstream):
    redis_server.freeze()
    try:
        key_token = "tk_0123456789abcdef:" + "y" * 43
        e = envelope(get(mega, [("X-Service-Token", key_token)]), 503)
        assert e["code"] == "SERVICE_UNAVAILABLE", e
    finally:
        redis_server.thaw()
