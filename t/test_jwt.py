"""JWT bearer tokens (issue 7): every known attack refused with the same
401 as any other credential failure, none reaching the upstream; valid
tokens of each algorithm admitted with the buyer and plan of their claims.

Tokens come from an independent library (PyJWT, python3-jwt); the ones it
refuses to make are built by hand (t/helpers/jwt.py).  Attack variants are
sent over keep-alive connections, so a thousand cost well under a second
of nginx time each.
"""

import itertools
import json
import os
import random
import re
import time

import pytest

from helpers import client
from helpers import jwt as J
from helpers.keys import raw_key
from helpers.problem import check_problem, without_request_id
from helpers.procs import PROXY
from helpers.upstream import header_values


VARIANTS = 1000
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def jwt_http(keys, extra=""):
    return "\n".join([
        keys.directives(),
        "    toll_jwt on;",
        "    toll_jwt_issuer %s;" % J.ISSUER,
        "    toll_jwt_audience %s;" % J.AUDIENCE,
        "    toll_jwt_leeway 5s;",
        "    toll_jwt_plan_claim scope prefix=plan:;",
        "    toll_jwt_default_plan free;",
        "    toll_plan free unlimited;",
        "    toll_plan pro unlimited;",
        extra,
    ])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return J.Keys(tmp_path_factory.mktemp("jwtkeys"))


@pytest.fixture
def gate(start_nginx, keys):
    return start_nginx(http_extra=jwt_http(keys), toll_log=True)


def bearer(tok):
    return [("Authorization", "Bearer " + tok)]


def now():
    return int(time.time())


def send_many(ngx, tokens, extra_headers=()):
    """Each token once, over one keep-alive connection; the responses."""
    ka = client.KeepAlive(ngx.port)
    out = []
    try:
        for i, t in enumerate(tokens):
            # before nginx's keepalive_requests (1000) closes it, with a
            # "Connection: close" that would make this answer look other
            if i % 500 == 0:
                ka.connect()
            out.append(ka.request("GET", "/api",
                                  bearer(t) + list(extra_headers)))
    finally:
        ka.close()
    return out


def baseline_401(ngx):
    """What any credential failure is answered: here, no credential."""
    ka = client.KeepAlive(ngx.port)
    try:
        return without_request_id(ka.request("GET", "/api", []))
    finally:
        ka.close()


def assert_all_refused(ngx, upstream, tokens):
    base = baseline_401(ngx)
    before = upstream.count
    resps = send_many(ngx, tokens)
    assert len(resps) == len(tokens)
    admitted = [t for t, r in zip(tokens, resps) if r.status != 401]
    assert admitted == [], admitted[:3]
    check_problem(resps[0], 401, "unauthorized")
    different = [t for t, r in zip(tokens, resps)
                 if without_request_id(r) != base]
    assert different == [], different[:3]
    assert upstream.count == before
    return resps


# ------------------------------------------------------- valid tokens

@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA", "HS256"])
def test_each_algorithm_verified(gate, upstream, keys, alg):
    tok = J.token(keys, alg, J.claims(now(), sub="buyer-" + alg,
                                      scope="read plan:pro write"))
    r, tag = client.tagged_request(gate.port, bearer(tok), path="/api")
    assert r.status == 200, r
    req = upstream.requests[-1]
    assert header_values(req, "X-Toll-Buyer") == ["buyer-" + alg]
    assert header_values(req, "X-Toll-Plan") == ["pro"]
    kid = header_values(req, "X-Toll-Key-Id")
    assert len(kid) == 1 and re.match(r"^jwt:[0-9a-f]{32}$", kid[0]), kid
    # the token is the caller's credential: the upstream never sees it
    assert header_values(req, "Authorization") == []
    entry = gate.wait_toll_log(tag)[0]
    assert entry["auth"] == "OK" and entry["buyer"] == "buyer-" + alg


@pytest.mark.parametrize("buyer", ["{acme", "a}", "a{b}c", "{}"])
def test_buyer_with_braces_inside_admitted(gate, upstream, keys, buyer):
    """'{' anywhere, or '}' after the first byte, leaves the names' hash
    tag non-empty: such a buyer is as good as any."""
    tok = J.token(keys, "ES256", J.claims(now(), sub=buyer))
    r = client.request(gate.port, "GET", "/api", bearer(tok))
    assert r.status == 200, r
    assert header_values(upstream.requests[-1], "X-Toll-Buyer") == [buyer]


def test_default_plan_and_stable_key_id(gate, upstream, keys):
    t1 = J.token(keys, "RS256", J.claims(now(), sub="acme"))
    t2 = J.token(keys, "ES256", J.claims(now(), sub="acme", exp_in=600))
    for t in (t1, t2):
        r = client.request(gate.port, "GET", "/api", bearer(t))
        assert r.status == 200, r
    a, b = upstream.requests[-2:]
    assert header_values(a, "X-Toll-Plan") == ["free"]
    # two tokens, one buyer: one identity for limits and quotas
    assert (header_values(a, "X-Toll-Key-Id")
            == header_values(b, "X-Toll-Key-Id"))


def test_key_rotation_two_kids(gate, upstream, keys):
    n = now()
    old = J.token(keys, "RS256", J.claims(n), kid="rsa1")
    new = J.token(keys, "RS256", J.claims(n), kid="rsa2", key=keys.rsa2)
    for t in (old, new):
        assert client.request(gate.port, "GET", "/api",
                              bearer(t)).status == 200
    # signed by one key, naming the other
    wrong = J.token(keys, "RS256", J.claims(n), kid="rsa1", key=keys.rsa2)
    nokid = J.token(keys, "RS256", J.claims(n), kid=None)
    assert_all_refused(gate, upstream, [wrong, nokid])


def test_api_keys_still_work_and_both_is_ambiguous(gate, upstream, keys,
                                                   redis_server):
    k = raw_key(redis_server, owner="apikey-owner", plan="pro")
    r = client.request(gate.port, "GET", "/api", [("X-API-Key", k.token)])
    assert r.status == 200, r
    r = client.request(gate.port, "GET", "/api", bearer(k.token))
    assert r.status == 200, r
    tok = J.token(keys, "RS256", J.claims(now()))
    before = upstream.count
    r = client.request(gate.port, "GET", "/api",
                       bearer(tok) + [("X-API-Key", k.token)])
    check_problem(r, 400, "ambiguous_credentials")
    # two Authorization headers: nginx itself refuses them (400)
    r = client.request(gate.port, "GET", "/api",
                       bearer(tok) + bearer(tok))
    assert r.status == 400, r
    assert upstream.count == before


def test_jwt_off_location_refuses_tokens(start_nginx, upstream, keys):
    locs = """
        location / {
            toll on;
            toll_jwt off;
            %s
        }
    """ % PROXY
    ngx = start_nginx(http_extra=jwt_http(keys), locations=locs)
    tok = J.token(keys, "RS256", J.claims(now()))
    assert_all_refused(ngx, upstream, [tok])


def test_jwks_file(start_nginx, upstream, keys):
    http = "\n".join([
        "    toll_jwt_key %s;" % keys.path("jwks.json"),
        "    toll_jwt on;",
        "    toll_jwt_audience %s;" % J.AUDIENCE,
    ])
    ngx = start_nginx(http_extra=http)
    n = now()
    good = [J.token(keys, "RS256", J.claims(n), kid="j-rsa", key=keys.rsa2),
            J.token(keys, "ES256", J.claims(n), kid="j-ec"),
            J.token(keys, "EdDSA", J.claims(n), kid="j-ed"),
            J.token(keys, "HS256", J.claims(n), kid="j-hs")]
    for t in good:
        r = client.request(ngx.port, "GET", "/api", bearer(t))
        assert r.status == 200, r
    # rsa1 is not in the set; a JWKS kid under another algorithm
    bad = [J.token(keys, "RS256", J.claims(n), kid="j-rsa"),
           J.token(keys, "RS256", J.claims(n), kid="j-ec", key=keys.rsa2)]
    assert_all_refused(ngx, upstream, bad)


def test_cache_hit_verifies_once(start_nginx, upstream, keys):
    ngx = start_nginx(http_extra=jwt_http(keys), workers=1,
                      error_log_level="debug",
                      server_extra="location = /toll/metrics "
                                   "{ toll_metrics; }")
    tok = J.token(keys, "RS256", J.claims(now()))
    resps = send_many(ngx, [tok] * 20)
    assert [r.status for r in resps] == [200] * 20
    log = ngx.error_log_text()
    assert log.count("toll jwt: cache miss") == 1, log.count(
        "toll jwt: cache miss")
    assert log.count("toll jwt: cache hit") == 19
    # nginx's own debug lines show request headers; toll's never the token
    assert not [ln for ln in log.splitlines()
                if "toll" in ln and tok in ln]
    # another policy (location) does not trust what this one verified
    other = J.token(keys, "RS256", J.claims(now(), sub="other"))
    send_many(ngx, [other, other])
    assert ngx.error_log_text().count("toll jwt: cache miss") == 2
    # and the metrics count them as JWT lookups, not API keys
    body = client.request(ngx.port, path="/toll/metrics").body.decode()
    for line in ('toll_key_cache_hits_total{credential="jwt"} 20',
                 'toll_key_cache_misses_total{credential="jwt"} 2',
                 'toll_key_cache_hits_total{credential="api_key"} 0',
                 'toll_key_cache_misses_total{credential="api_key"} 0'):
        assert line in body.splitlines(), (line, body)


# ------------------------------------------------------------ attacks

def _variants(make, n=VARIANTS):
    """n distinct tokens from make(0), make(1), ..."""
    out = []
    seen = set()
    for i in range(n * 20):
        t = make(i)
        if t not in seen:
            seen.add(t)
            out.append(t)
            if len(out) == n:
                return out
    raise AssertionError("only %d distinct variants" % len(out))


def _sub(i):
    return "buyer-%d" % i


def attack_alg_none(keys):
    spellings = ["".join(c) for c in itertools.product(*zip("none",
                                                             "NONE"))]
    sigs = ["", "AA", J.b64u(b"x" * 32)]

    def make(i):
        alg = spellings[i % len(spellings)]
        h = {"alg": alg, "typ": "JWT"}
        if i % 3 == 0:
            h["kid"] = "rsa1"
        return J.forge(h, J.claims(now(), sub=_sub(i)),
                       sigs[i % len(sigs)] if i % 2 else "")
    return _variants(make)


def attack_unknown_alg(keys):
    algs = ["HS384", "HS512", "RS384", "RS512", "PS256", "ES384", "ES512",
            "ES256K", "rs256", "Rs256", "RS256 ", " RS256", "RS2560",
            "eddsa", "EDDSA", "Ed25519", "hs256", "", "RSA", "RS256\u0000",
            None, 256, ["RS256"], {"RS256": 1}, True]

    def make(i):
        h = {"alg": algs[i % len(algs)], "kid": "rsa1"}
        if h["alg"] is None:
            del h["alg"]
        return J.forge(h, J.claims(now(), sub=_sub(i)),
                       os.urandom(256))
    return _variants(make)


def attack_hmac_with_rsa_key(keys):
    """RS256 -> HS256 confusion: an HMAC made with the public key as the
    secret, in each form an attacker might guess the server holds."""
    pem = open(keys.path("rsa1.pem"), "rb").read()
    from cryptography.hazmat.primitives import serialization
    der = keys.rsa1.public_key().public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo)
    secrets = [pem, pem.rstrip(b"\n"), der, pem.replace(b"\n", b"\r\n")]
    kids = ["rsa1", "rsa2", None, "hs1"]

    def make(i):
        h = {"alg": "HS256", "typ": "JWT"}
        kid = kids[i % len(kids)]
        if kid:
            h["kid"] = kid
        return J.hs256_sign(secrets[i % len(secrets)], h,
                            J.claims(now(), sub=_sub(i)))
    return _variants(make)


def attack_kid_of_other_key(keys):
    """Validly signed, but the kid names a key of another algorithm."""
    combos = [("RS256", "ec1"), ("RS256", "ed1"), ("RS256", "hs1"),
              ("ES256", "rsa1"), ("EdDSA", "ec1"), ("HS256", "rsa1"),
              ("RS256", "nope"), ("RS256", ""), ("RS256", "../rsa1")]

    def make(i):
        alg, kid = combos[i % len(combos)]
        return J.token(keys, alg, J.claims(now(), sub=_sub(i)), kid=kid)
    n = 200 if True else VARIANTS     # RSA signing in Python is slow-ish
    return _variants(make, n)


def _signed_claims(keys, mutate, n=VARIANTS):
    algs = ["HS256", "EdDSA", "ES256", "HS256"]

    def make(i):
        c = J.claims(now(), sub=_sub(i))
        mutate(c, i)
        return J.token(keys, algs[i % len(algs)], c)
    return _variants(make, n)


def attack_iss(keys):
    wrong = [None, "https://evil.example", J.ISSUER + "/", J.ISSUER.upper(),
             "", 1, [J.ISSUER], {"iss": J.ISSUER}]

    def m(c, i):
        c["iss"] = wrong[i % len(wrong)]
        if c["iss"] is None:
            del c["iss"]
    return _signed_claims(keys, m)


def attack_aud(keys):
    wrong = [None, "other.example", J.AUDIENCE + ".", "", [],
             ["other.example"], [J.AUDIENCE.upper()], 7, {"aud": 1}]

    def m(c, i):
        c["aud"] = wrong[i % len(wrong)]
        if c["aud"] is None:
            del c["aud"]
    return _signed_claims(keys, m)


def attack_exp_missing(keys):
    return _signed_claims(keys, lambda c, i: c.pop("exp"))


def attack_exp_past(keys):
    # beyond the 5 s leeway, by 6 s to many years
    def m(c, i):
        c["exp"] = now() - 6 - i * 97
    return _signed_claims(keys, m)


def attack_exp_not_integer(keys):
    def m(c, i):
        e = now() + 3600 + i
        c["exp"] = [str(e), float(e) + 0.5, "%d" % e, True, None,
                    [e], {"t": e}, -1][i % 8]
    return _signed_claims(keys, m)


def attack_nbf_future(keys):
    def m(c, i):
        c["nbf"] = now() + 60 + i
    return _signed_claims(keys, m)


def _valid_tokens(keys, n):
    algs = ["HS256", "EdDSA", "ES256", "RS256"]
    base = {a: J.token(keys, a, J.claims(now(), sub="v-" + a))
            for a in algs}
    return [base[algs[i % len(algs)]] for i in range(n)]


def attack_bad_base64url(keys):
    bad = "+/=\\ !*~%$#@^&()[]{}|;,<>?\"'`"

    def make(i):
        t = _valid[i % len(_valid)]
        seg = i % 3
        parts = t.split(".")
        p = parts[seg]
        pos = (i * 7) % max(1, len(p))
        if seg == 0 and pos == 0:
            pos = 1       # a blank there is the one after "Bearer"
        parts[seg] = p[:pos] + bad[i % len(bad)] + p[pos:]
        return ".".join(parts)
    _valid = _valid_tokens(keys, 4)
    return _variants(make)


def attack_non_canonical_base64(keys):
    """The last character with its unused bits set: decodes to the same
    bytes in lax decoders, so a token could be altered unnoticed."""
    alphabet = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                "0123456789-_")
    valid = _valid_tokens(keys, 4)
    out = set()
    for t in valid:
        parts = t.split(".")
        for seg in range(3):
            p = parts[seg]
            spare = {2: 4, 3: 2}.get(len(p) % 4)
            if not spare:
                continue
            v = alphabet.index(p[-1])
            for x in range(1, 1 << spare):
                q = list(parts)
                q[seg] = p[:-1] + alphabet[v | x]
                out.add(".".join(q))
    # padding, as lax decoders accept it
    for t in valid:
        parts = t.split(".")
        for seg in range(3):
            for pad in ("=", "==", "==="):
                q = list(parts)
                q[seg] = q[seg] + pad
                out.add(".".join(q))
    return sorted(out)


def attack_trailing_bytes(keys):
    # (trailing blanks alone are not the token's: nginx trims them)
    tails = [".", " x", "\tx", "..", ".e30", "=", "%00", "#", "+",
             ",", ";", "\x7f", "~", "!"]
    valid = _valid_tokens(keys, 4)

    def make(i):
        r = random.Random(i)
        return valid[i % 4] + "".join(r.choice(tails)
                                      for _ in range(1 + i % 7))
    return _variants(make)


def attack_segments(keys):
    valid = _valid_tokens(keys, 4)

    def make(i):
        parts = valid[i % 4].split(".")
        k = (i // 4) % 5
        if k == 0:
            return ".".join(parts + [J.b64u(os.urandom(8 + i % 40))])
        if k == 1:
            return ".".join(parts[:2]) + "." + "".join(
                [".", "x" * (i % 9)])
        if k == 2:
            return ".".join([parts[0], parts[1]] * (2 + i % 3))
        if k == 3:
            return ".".join(parts[:2] + [""]) + "." * (1 + i % 20)
        return "." + ".".join(parts) + "#%d" % i
    return _variants(make)


def attack_short_signature(keys):
    valid = _valid_tokens(keys, 4)

    def make(i):
        h, p, s = valid[i % 4].split(".")
        cut = i % len(s)           # 0: empty signature
        return "%s.%s.%s" % (h, p, s[:cut]) + ("" if i < len(s) * 4
                                                else "#%d" % i)
    out = {make(i) for i in range(3000)}
    return sorted(out)[:VARIANTS]


def attack_bad_signature(keys):
    valid = _valid_tokens(keys, 4)

    def make(i):
        h, p, s = valid[i % 4].split(".")
        raw = bytearray(J.base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
        r = random.Random(i)
        raw[r.randrange(len(raw))] ^= 1 << r.randrange(8)
        return "%s.%s.%s" % (h, p, J.b64u(bytes(raw)))
    return _variants(make)


def attack_header_tricks(keys):
    """Duplicate names, crit, a non-object header, an embedded jwk."""
    pub = json.loads(__import__("jwt").algorithms.RSAAlgorithm.to_jwk(
        keys.rsa2.public_key()))

    def make(i):
        c = J.claims(now(), sub=_sub(i))
        k = i % 5
        if k == 0:
            raw = J.b64u('{"alg":"none","alg":"RS256","kid":"rsa1"}')
            return J.forge(None, c, os.urandom(256), raw_header=raw)
        if k == 1:
            return J.token(keys, "HS256", c,
                           headers={"crit": ["exp"], "exp": 1})
        if k == 2:
            raw = J.b64u(json.dumps(["RS256", i]))
            return J.forge(None, c, os.urandom(256), raw_header=raw)
        if k == 3:
            # a key of the attacker's own, offered in the header
            return J.token(keys, "RS256", c, kid=None, key=keys.rsa2,
                           headers={"jwk": pub})
        raw = J.b64u('{"alg":"HS256","kid":"hs1"} trailing')
        return J.forge(None, c, os.urandom(32), raw_header=raw)
    return _variants(make, 250)


def attack_buyer_hash_tag(keys):
    """A buyer beginning with '}' would end the hash tag of its Redis
    names empty (docs/redis.md "Slots"): refused as any invalid buyer."""
    heads = ["}", "}acme", "}}", "}{a}", "}:"]

    def m(c, i):
        c["sub"] = heads[i % len(heads)] + ("%d" % i if i >= 5 else "")
    return _signed_claims(keys, m, 100)


ATTACKS = {
    "alg_none": attack_alg_none,
    "unknown_alg": attack_unknown_alg,
    "hmac_with_rsa_key": attack_hmac_with_rsa_key,
    "kid_of_other_key": attack_kid_of_other_key,
    "iss": attack_iss,
    "aud": attack_aud,
    "exp_missing": attack_exp_missing,
    "exp_past": attack_exp_past,
    "exp_not_integer": attack_exp_not_integer,
    "nbf_future": attack_nbf_future,
    "bad_base64url": attack_bad_base64url,
    "non_canonical_base64": attack_non_canonical_base64,
    "trailing_bytes": attack_trailing_bytes,
    "segments": attack_segments,
    "short_signature": attack_short_signature,
    "bad_signature": attack_bad_signature,
    "header_tricks": attack_header_tricks,
    "buyer_hash_tag": attack_buyer_hash_tag,
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_refused(gate, upstream, keys, attack):
    tokens = ATTACKS[attack](keys)
    assert len(tokens) >= 50
    resps = assert_all_refused(gate, upstream, tokens)
    assert len(resps) == len(tokens)
    # refusals are logged with the reason, never with the token
    log = gate.error_log_text()
    for t in tokens[:50]:
        assert t not in log
    assert "toll: refused" in log


def test_refusals_look_like_api_key_refusals(gate, redis_server, keys):
    k = raw_key(redis_server, owner="acme")
    wrong = k.key_id + ":" + "x" * 43
    r_key = client.request(gate.port, "GET", "/api", [("X-API-Key", wrong)])
    r_jwt = client.request(gate.port, "GET", "/api",
                           bearer(J.forge({"alg": "none"}, {"sub": "a"})))
    check_problem(r_key, 401, "unauthorized")
    check_problem(r_jwt, 401, "unauthorized")
    assert without_request_id(r_key)[0] == without_request_id(r_jwt)[0]


def test_exp_boundary_with_fixed_clock(start_nginx, upstream, keys,
                                       monkeypatch):
    """libfaketime freezes nginx's wall clock at T (its monotonic clock
    runs, so timers work): exp = T + 1 is admitted, exp = T is not."""
    if not os.path.exists(FAKETIME_LIB):
        pytest.skip("faketime is not installed")
    if os.environ.get("TOLL_PRELOAD", "").strip():
        # nginx hangs at start with both preloaded: ASan's runtime calls
        # the clock functions libfaketime intercepts while it starts
        pytest.skip("libfaketime and the ASan runtime deadlock at start; "
                    "make test runs this")
    t0 = now() + 86400 * 365
    monkeypatch.setenv("LD_PRELOAD", FAKETIME_LIB)
    monkeypatch.setenv("FAKETIME", time.strftime("%Y-%m-%d %H:%M:%S",
                                                 time.gmtime(t0)))
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")
    ngx = start_nginx(http_extra=jwt_http(keys, "    toll_jwt_leeway 0;")
                      .replace("    toll_jwt_leeway 5s;", ""))
    monkeypatch.delenv("LD_PRELOAD", raising=False)

    def tok(**kw):
        c = J.claims(t0 - 100)
        c.update(kw)
        return J.token(keys, "ES256", c)

    ok = [tok(exp=t0 + 1), tok(exp=t0 + 1, nbf=t0), tok(exp=t0 + 1, iat=t0)]
    for t in ok:
        r = client.request(ngx.port, "GET", "/api", bearer(t))
        assert r.status == 200, r
    assert_all_refused(ngx, upstream, [tok(exp=t0), tok(exp=t0 - 1),
                                       tok(exp=t0 + 10, nbf=t0 + 1),
                                       tok(exp=t0 + 10, iat=t0 + 1)])


def test_exp_optional_when_allowed(start_nginx, upstream, keys):
    ngx = start_nginx(http_extra=jwt_http(keys,
                                          "    toll_jwt_require_exp off;"))
    c = J.claims(now())
    del c["exp"]
    r = client.request(ngx.port, "GET", "/api",
                       bearer(J.token(keys, "HS256", c)))
    assert r.status == 200, r


# ------------------------------------------------------------- nginx -t

NGINX_T_CASES = [
    ("missing", "toll_jwt_key {d}/nope.pem;", r"open\(\) .*nope.pem.* failed"),
    ("bad_alg", "toll_jwt_key {d}/rsa1.pem alg=HS384;",
     r'invalid algorithm "alg=HS384"'),
    ("alg_none", "toll_jwt_key {d}/rsa1.pem alg=none;",
     r'invalid algorithm "alg=none"'),
    ("pem_as_hmac", "toll_jwt_key {d}/rsa1.pem alg=HS256;",
     r"is a PEM file, and an HS256 secret must not be one"),
    ("type_mismatch", "toll_jwt_key {d}/rsa1.pem alg=ES256;",
     r"is not a ES256 key"),
    ("secret_without_alg", "toll_jwt_key {d}/hs.key;",
     r"neither a PEM public key nor a JWKS file"),
    ("short_secret", "toll_jwt_key {d}/short.key alg=HS256;",
     r"HS256 secret in .* is 5 bytes, the minimum is 32"),
    ("private_key", "toll_jwt_key {d}/private.pem;",
     r"no PEM public key in"),
    ("small_rsa", "toll_jwt_key {d}/rsa1024.pem;",
     r"has 1024 bits, the minimum is 2048"),
    ("duplicate_kid", "toll_jwt_key {d}/rsa1.pem kid=a; "
     "toll_jwt_key {d}/rsa2.pem kid=a;", r"duplicate RS256 key id a"),
    ("bad_param", "toll_jwt_key {d}/rsa1.pem kind=x;",
     r'invalid parameter "kind=x"'),
    ("jwks_empty", "toll_jwt_key {d}/empty.json;", r'no "keys" array'),
    ("jwks_kid", "toll_jwt_key {d}/jwks.json kid=x;",
     r'"kid" cannot be given for the JWKS file'),
    ("no_keys", "toll_jwt on;", r'"toll_jwt" is on but no "toll_jwt_key"'),
    ("bad_default_plan", "toll_jwt_key {d}/rsa1.pem; "
     "toll_jwt_default_plan 'a b';", r'invalid plan name "a b"'),
    ("jwt_key_in_server", None, r'"toll_jwt_key" directive is not allowed'),
]


@pytest.mark.parametrize("name,line,expect", NGINX_T_CASES,
                         ids=[c[0] for c in NGINX_T_CASES])
def test_nginx_t_errors(nginx_t, keys, redis_server, name, line, expect):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    keys.write("short.key", b"12345\n")
    keys.write("empty.json", b"{}")
    keys.write("private.pem", keys.rsa1.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    if not os.path.exists(keys.path("rsa1024.pem")):
        small = rsa.generate_private_key(public_exponent=65537,
                                         key_size=1024)
        keys.write("rsa1024.pem", small.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo))
    head = "toll_redis %s; " % redis_server.address
    if line is None:
        http = (head + "server { listen 127.0.0.1:1; toll_jwt_key %s; }"
                % keys.path("rsa1.pem"))
    else:
        http = head + line.format(d=keys.dir) + (
            " server { listen 127.0.0.1:1; location / { toll on; } }")
    rc, out, text = nginx_t(http)
    assert rc != 0, out
    assert re.search(expect, out), out
    assert "[emerg]" in out


def test_nginx_t_accepts_every_key_kind(nginx_t, keys, redis_server):
    http = ("toll_redis %s;\n%s\n    toll_jwt_key %s;\n    toll_jwt on;\n"
            "server { listen 127.0.0.1:1; location / { toll on; } }"
            % (redis_server.address, keys.directives(),
               keys.path("jwks.json")))
    rc, out, text = nginx_t(http)
    assert rc == 0, out
