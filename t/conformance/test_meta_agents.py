"""Conformance: Meta-Agents (reference 004) behind toll, configured by
conf/examples/meta-agents.conf as it ships: Azure AD bearer tokens whose
keys toll-settle fetches (toll_jwt_jwks), tiers per hour with concurrent
executions, RFC 7807 problems traced by X-Correlation-ID.

Each test names the reference's line it checks (@cites); a behaviour toll
does not match is an expected failure with its reason.
"""

import threading
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from helpers import client
from helpers import jwt as J
from helpers.limits import SlowUpstream
from helpers.procs import wait_for

from platform_example import Platform, cites, publish_jwks


ISS = "https://login.microsoftonline.com/TENANT/v2.0"
AUD = "api://agentstudio"


@pytest.fixture(scope="module")
def azure_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def start(start_nginx, redis_server, upstream, tmp_path, azure_key):
    publish_jwks(redis_server, "azure", [(azure_key, "azure-1")])
    return Platform("meta-agents.conf", start_nginx, redis_server, upstream,
                    tmp_path).start()


@pytest.fixture
def meta(start_nginx, redis_server, upstream, tmp_path, azure_key):
    return start(start_nginx, redis_server, upstream, tmp_path, azure_key)


def token(azure_key, sub="app-1", roles=None, exp_in=3600):
    now = int(time.time())
    c = {"sub": sub, "iss": ISS, "aud": AUD, "iat": now, "nbf": now,
         "exp": now + exp_in}
    if roles is not None:
        c["roles"] = roles
    return J.pyjwt.encode(c, azure_key, algorithm="RS256",
                          headers={"kid": "azure-1"})


def get(p, t=None, path="/api/v1/agents", headers=()):
    h = list(headers)
    if t is not None:
        h.append(("Authorization", "Bearer " + t))
    return client.request(p.port, "GET", path, h)


def problem(r, status):
    assert r.status == status, (r, r.body)
    assert r.header("Content-Type") == "application/problem+json", r.headers
    doc = r.json()
    assert doc["status"] == status
    assert doc["type"].startswith("https://"), doc
    assert isinstance(doc["title"], str) and doc["title"]
    return doc


@cites("004", 45, "-H \"Authorization: Bearer {access-token}\"")
def test_azure_bearer(meta, azure_key, upstream):
    r = get(meta, token(azure_key))
    assert r.status == 200, r
    assert upstream.count == 1


@cites("004", 99, "| 401 | Unauthorized | Missing or invalid authentication |")
@cites("004", 70, "X-Correlation-ID: {uuid}  # Optional, for request tracing")
@cites("004", 83, "\"traceId\": \"00-a1b2c3d4e5f6-0123456789ab-01\",")
def test_401_problem_traced(meta, azure_key):
    cid = str(uuid.uuid4())
    doc = problem(get(meta, None, headers=[("X-Correlation-ID", cid)]), 401)
    assert doc["traceId"] == cid, doc
    # without the header, a trace id all the same
    doc = problem(get(meta, token(azure_key, exp_in=-3600)), 401)
    assert doc["traceId"], doc


@cites("004", 747, "X-RateLimit-Limit: 1000")
@cites("004", 748, "X-RateLimit-Remaining: 998")
@cites("004", 749, "X-RateLimit-Reset: 1696684800")
@cites("004", 756, "| Free | 100 | 1 |")
@cites("004", 103, "| 429 | Too Many Requests | Rate limit exceeded |")
@cites("004", 765, "\"type\": \"https://tools.ietf.org/html/rfc6585#section-4\",")
@cites("004", 769, "\"retry_after\": 300")
def test_free_tier_100_per_hour(meta, azure_key):
    t = token(azure_key, sub="free-app")
    # one keep-alive connection: a call's place (concurrency 1) is given
    # back in its log phase, which nginx runs before it reads the next
    # request of the connection; a new connection could come first
    conn = client.KeepAlive(meta.port)
    bearer = [("Authorization", "Bearer " + t)]
    try:
        got = [conn.request("GET", "/api/v1/agents", bearer)
               for _ in range(100)]
        assert [r.status for r in got] == [200] * 100
        assert got[0].header("X-RateLimit-Limit") == "100"
        assert got[0].header("X-RateLimit-Remaining") == "99"
        assert got[99].header("X-RateLimit-Remaining") == "0"
        reset = int(got[99].header("X-RateLimit-Reset"))
        # an hour's window counts in 40 slots of 90 s: its end is up to
        # one slot later than an exact log's, rounded up (docs/limits.md)
        assert time.time() < reset <= time.time() + 3600 + 90 + 1
        r = conn.request("GET", "/api/v1/agents",
                         bearer + [("X-Correlation-ID", "trace-429")])
    finally:
        conn.close()
    doc = problem(r, 429)
    assert doc["code"] == "rate_limited", doc
    assert doc["detail"]
    assert isinstance(doc["retry_after"], int) and doc["retry_after"] > 0
    assert int(r.header("Retry-After")) == doc["retry_after"]
    assert doc["traceId"] == "trace-429"


@cites("004", 757, "| Basic | 1,000 | 5 |")
def test_tier_from_app_role(meta, azure_key):
    r = get(meta, token(azure_key, sub="basic-app", roles=["tier:basic"]))
    assert r.status == 200
    assert r.header("X-RateLimit-Limit") == "1000"


@cites("004", 756, "| Free | 100 | 1 |")
def test_free_tier_one_concurrent(start_nginx, redis_server, tmp_path,
                                  azure_key):
    slow = SlowUpstream()
    try:
        p = start(start_nginx, redis_server, slow, tmp_path, azure_key)
        t = token(azure_key, sub="free-busy")
        out = []
        th = threading.Thread(
            target=lambda: out.append(get(p, t, "/api/v1/runs/hold").status))
        th.start()
        wait_for(lambda: slow.held() == 1, 10, what="one call held")
        doc = problem(get(p, t), 429)
        assert doc["code"] == "concurrency_limited", doc
        slow.release()
        th.join()
        assert out == [200]
    finally:
        slow.close()
