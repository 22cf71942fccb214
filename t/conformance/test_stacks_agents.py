"""Conformance: Stacks Agents (reference 003) behind toll, configured by
conf/examples/stacks-agents.conf as it ships.

Each test names the reference's line it checks (@cites); a behaviour toll
does not match is an expected failure with its reason.
"""

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from helpers import client
from helpers import jwt as J
from helpers.keys import tollctl

from platform_example import Platform, cites, envelope


@pytest.fixture(scope="module")
def idp_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def stacks(start_nginx, redis_server, upstream, tmp_path, idp_key):
    p = Platform("stacks-agents.conf", start_nginx, redis_server, upstream,
                 tmp_path)
    p.write("stacks-idp.pem", idp_key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo))
    return p.start(toll_log=True)


def token(idp_key, sub="SP3AGENT", exp_in=600, **claims):
    now = int(time.time())
    c = {"sub": sub, "iat": now, "exp": now + exp_in}
    c.update(claims)
    return J.pyjwt.encode(c, idp_key, algorithm="ES256")


def req(p, t=None, path="/api/agents/list", method="GET", headers=()):
    h = list(headers)
    if t is not None:
        h.append(("Authorization", "Bearer " + t))
    return client.request(p.port, method, path, h)


@cites("003", 14, "Scheme: Bearer JWT in `Authorization` header.")
@cites("003", 19, "`scope` or `roles` (e.g., `admin`, `agent:write`, "
       "`payment:process`)")
def test_scope_or_roles_admit(stacks, idp_key, upstream):
    by_scope = token(idp_key, scope="agent:read payment:read")
    by_role = token(idp_key, roles=["admin"])
    assert req(stacks, by_scope).status == 200
    assert req(stacks, by_role).status == 200
    assert req(stacks, by_scope, "/api/payments/history").status == 200
    # "admin or agent:write", either way
    assert req(stacks, by_role, "/api/agents/a1/permissions",
               "PUT").status == 200
    assert req(stacks, token(idp_key, scope="agent:write"),
               "/api/agents/a1/permissions", "PUT").status == 200
    assert upstream.count == 5


@cites("003", 28, "401 Unauthorized: missing/invalid token")
@cites("003", 183, "`unauthorized`, `forbidden`, `validation_error`")
@cites("003", 188, "{ \"error\": {\"code\":\"unauthorized\", "
       "\"message\":\"Missing or invalid token\"} }")
def test_401_unauthorized(stacks, idp_key, upstream):
    expired = token(idp_key, exp_in=-3600, scope="agent:read")
    for t in (None, expired, "e30.e30.e30"):
        e = envelope(req(stacks, t), 401)
        assert e["code"] == "unauthorized", e
        assert e["message"]
    assert upstream.count == 0


@cites("003", 29, "403 Forbidden: insufficient scope/role")
@cites("003", 183, "`unauthorized`, `forbidden`, `validation_error`")
def test_403_forbidden(stacks, idp_key, upstream):
    reader = token(idp_key, scope="agent:read")
    e = envelope(req(stacks, reader, "/api/payments/process", "POST"), 403)
    assert e["code"] == "forbidden", e
    assert "payment:process" in e["message"], e
    e = envelope(req(stacks, reader, "/api/agents/a1/permissions", "PUT"),
                 403)
    assert e["code"] == "forbidden", e
    assert upstream.count == 0


@cites("003", 159, "Auth: Bearer token via `Authorization` header or "
       "`?token=...` query.")
def test_websocket_token_in_query(stacks, idp_key, upstream):
    t = token(idp_key, scope="agent:read")
    r = req(stacks, None, "/ws/updates?token=" + t + "&since=5")
    assert r.status == 200, r
    # the API and the access log never see the token
    assert t not in upstream.last["path"], upstream.last["path"]
    assert "since=5" in upstream.last["path"]
    time.sleep(0.2)
    assert t not in stacks.ngx.read(stacks.ngx.access_log)
    # the header works there too, and the query only there
    assert req(stacks, t, "/ws/updates").status == 200
    e = envelope(req(stacks, None, "/api/agents/list?token=" + t), 401)
    assert e["code"] == "unauthorized"


@cites("003", 198, "Nginx: 10 req/s per IP on `/api/` with burst 20")
@cites("003", 199, "Exceeding rate returns 429:")
@cites("003", 201, "{ \"error\": {\"code\":\"rate_limited\", "
       "\"message\":\"Too many requests\"} }")
def test_per_ip_burst_20(stacks, idp_key):
    t = token(idp_key, scope="agent:read")
    got = [req(stacks, t) for _ in range(21)]
    assert [r.status for r in got[:20]] == [200] * 20, got
    e = envelope(got[20], 429)
    assert e["code"] == "rate_limited", e


@cites("003", 43, "\"limits\": { \"daily\": 100000000, \"monthly\": "
       "3000000000 },")
@cites("003", 112, "402 blocked by rules/risk")
@cites("003", 190, "- 402 (blocked by risk/rules)")
@cites("003", 192, "\"code\":\"payment_blocked\"")
def test_daily_spending_limit_402(stacks, idp_key, redis_server, upstream):
    tollctl(redis_server, "buyer", "set-cap", "SP3SPENDER", "--currency",
            "STX", "--daily", "0.02")
    # a cap change reaches every nginx within a second (docs/metering.md)
    time.sleep(1.0)
    t = token(idp_key, sub="SP3SPENDER", scope="payment:process")
    got = [req(stacks, t, "/api/payments/process", "POST") for _ in range(3)]
    assert [r.status for r in got[:2]] == [200, 200], got
    e = envelope(got[2], 402)
    assert e["code"] == "payment_blocked", e
    assert e["message"]
    assert upstream.count == 2
