"""Forged JWTs (issue 13, defect 5): a token's signature is checked before
anything it claims is believed; the keys are parsed once, when the
configuration is read, not for each token; and an address sending forged
tokens is bounded by toll_limit_ip ... unauthenticated before their
signatures cost anything.
"""

import base64
import os
import subprocess

import pytest

from helpers import client
from helpers import jwt as J
from helpers.procs import PROXY
from test_jwt import bearer, jwt_http, now, send_many


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return J.Keys(tmp_path_factory.mktemp("jwtkeys"))


def bad_sig(tok):
    """The token with one bit of its signature flipped: the length is
    right, the header and the claims are untouched."""
    h, p, s = tok.split(".")
    raw = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    raw[len(raw) // 2] ^= 0x10
    return "%s.%s.%s" % (h, p, J.b64u(bytes(raw)))


ALGS = ["RS256", "ES256", "EdDSA", "HS256"]


# ----------------------------------------------- the signature decides first

@pytest.mark.parametrize("alg", ALGS)
def test_forged_token_refused_for_its_signature(start_nginx, upstream, keys,
                                                alg):
    """A forged token whose claims would also fail (expired, wrong issuer,
    wrong audience, no buyer) is refused for its signature: claims are
    only read from a token whose signature verifies."""
    ngx = start_nginx(http_extra=jwt_http(keys), toll_log=True)
    n = now()
    claims = [J.claims(n, exp_in=-3600),
              J.claims(n, iss="https://evil.example"),
              J.claims(n, aud="other.example"),
              J.claims(n, sub=None)]
    for c in claims:
        r, tag = client.tagged_request(ngx.port,
                                       bearer(bad_sig(J.token(keys, alg, c))),
                                       path="/api")
        assert r.status == 401, r
        entry = ngx.wait_toll_log(tag)[0]
        assert entry["auth"] == "WRONG_SECRET", (c, entry)
    assert upstream.count == 0
    log = ngx.error_log_text()
    assert log.count("jwt: the signature does not verify") == len(claims)
    assert "has passed" not in log and "is missing or wrong" not in log


@pytest.mark.parametrize("alg", ALGS)
def test_signed_token_still_refused_for_its_claims(start_nginx, upstream,
                                                   keys, alg):
    """The other side: with a good signature, the claims decide."""
    ngx = start_nginx(http_extra=jwt_http(keys), toll_log=True)
    n = now()
    cases = [(J.claims(n, exp_in=-3600), "EXPIRED"),
             (J.claims(n, iss="https://evil.example"), "CLAIMS"),
             (J.claims(n, sub=None), "CLAIMS")]
    for c, status in cases:
        r, tag = client.tagged_request(ngx.port,
                                       bearer(J.token(keys, alg, c)),
                                       path="/api")
        assert r.status == 401, r
        assert ngx.wait_toll_log(tag)[0]["auth"] == status, c
    assert upstream.count == 0


# --------------------------------------------- keys parsed once, at config

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

/*
 * Counts PEM_read_bio_PUBKEY() calls, one byte each in the file named by
 * TOLL_TEST_PEM_COUNT (opened before nginx clears its environment; the
 * workers inherit the descriptor).
 */

static int  count_fd = -1;

__attribute__((constructor)) static void
count_init(void)
{
    const char  *path = getenv("TOLL_TEST_PEM_COUNT");

    if (path != NULL) {
        count_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
                        0644);
    }
}

void *
PEM_read_bio_PUBKEY(void *bp, void **x, void *cb, void *u)
{
    static void *(*real)(void *, void **, void *, void *);

    if (real == NULL) {
        real = (void *(*)(void *, void **, void *, void *))
               dlsym(RTLD_NEXT, "PEM_read_bio_PUBKEY");
    }

    if (count_fd >= 0 && write(count_fd, "p", 1) != 1) {
        /* the test sees a short count */
    }

    return real(bp, x, cb, u);
}
"""


def pem_counting_nginx(start_nginx, tmp_path, monkeypatch, http, **kw):
    src = tmp_path / "pemcount.c"
    src.write_text(SHIM)
    so = str(tmp_path / "pemcount.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", so, str(src),
                    "-ldl"], check=True)
    count = str(tmp_path / "pem.count")
    open(count, "w").close()
    monkeypatch.setenv("TOLL_TEST_PEM_COUNT", count)
    preload = os.environ.get("TOLL_PRELOAD", "").strip()
    if preload:
        # the sanitizer runtime must stay first
        monkeypatch.setenv("TOLL_PRELOAD", preload + " " + so)
    else:
        monkeypatch.setenv("LD_PRELOAD", so)
    ngx = start_nginx(http_extra=http, **kw)
    monkeypatch.delenv("LD_PRELOAD", raising=False)

    def parsed():
        return os.path.getsize(count)
    return ngx, parsed


def test_pem_keys_parsed_at_config_not_per_token(start_nginx, upstream,
                                                 keys, tmp_path,
                                                 monkeypatch):
    ngx, parsed = pem_counting_nginx(start_nginx, tmp_path, monkeypatch,
                                     jwt_http(keys), workers=1)
    at_start = parsed()
    # the four PEM files of the config, parsed by the master at least
    assert at_start >= 4, at_start
    n = now()
    valid = [J.token(keys, a, J.claims(n, sub="pem-%s-%d" % (a, i)))
             for a in ("RS256", "ES256") for i in range(10)]
    forged = [bad_sig(t) for t in valid]
    resps = send_many(ngx, valid + forged)
    assert [r.status for r in resps] == [200] * 20 + [401] * 20
    # not one key parsed again for 40 verifications (libjwt 1.10 parses
    # its PEM text for each one)
    assert parsed() == at_start, parsed() - at_start


def test_keys_belong_to_the_configuration(start_nginx, upstream, keys,
                                          tmp_path):
    """The key files are read by nginx -t, start and reload only: changed
    or deleted on disk, the running configuration keeps its keys; a
    reload takes the new ones."""
    k = J.Keys(tmp_path / "rotating")
    ngx = start_nginx(http_extra=jwt_http(k))
    n = now()
    old = J.token(k, "RS256", J.claims(n, sub="before"))
    new = J.token(k, "RS256", J.claims(n, sub="after"), key=keys.rsa1)
    assert client.request(ngx.port, "GET", "/api",
                          bearer(old)).status == 200
    # rsa1.pem now holds another key (keys.rsa1's); ec.pem is gone
    with open(keys.path("rsa1.pem"), "rb") as f:
        k.write("rsa1.pem", f.read())
    os.unlink(k.path("ec.pem"))
    fresh = [J.token(k, "RS256", J.claims(n, sub="before-%d" % i))
             for i in range(3)]
    fresh.append(J.token(k, "ES256", J.claims(n, sub="ec")))
    assert [r.status for r in send_many(ngx, fresh + [new])] \
        == [200] * 4 + [401]
    # a reload reads the files again: ec.pem must exist for it
    k.write("ec.pem", J._pub_pem(k.ec))
    ngx.reload(wait_old_exit=True)
    assert [r.status for r in send_many(ngx, [new, old])] == [200, 401]


# ------------------------------------- a forging address is bounded, cheaply

def test_forging_address_bounded_before_verification(start_nginx, upstream,
                                                     keys):
    """toll_limit_ip ... unauthenticated counts failed tokens against the
    address; over the limit, an uncached token is refused (429) without
    its signature being checked, as an uncached API key is refused
    without a lookup.  A token in the cache still passes."""
    http = jwt_http(keys, "    toll_plan guess rate=6r/m burst=5;")
    locs = """
        location /api {
            toll on;
            toll_jwt on;
            toll_limit_ip guess unauthenticated;
            %s
        }
    """ % PROXY
    ngx = start_nginx(http_extra=http, locations=locs, workers=1,
                      error_log_level="debug")
    n = now()
    good = J.token(keys, "ES256", J.claims(n, sub="good"))
    assert client.request(ngx.port, "GET", "/api",
                          bearer(good)).status == 200
    forged = [bad_sig(J.token(keys, ALGS[i % 4],
                              J.claims(n, sub="forger-%d" % i)))
              for i in range(40)]
    sts = [r.status for r in send_many(ngx, forged)]
    assert sts == [401] * 5 + [429] * 35, sts
    log = ngx.error_log_text()
    # the good token's and the five that were allowed to fail
    verified = log.count("toll jwt: cache miss, verifying the signature")
    assert verified == 6, verified
    # a new valid token from that address waits, as a new API key would;
    # the cached one passes
    late = J.token(keys, "RS256", J.claims(n, sub="late"))
    sts = [r.status for r in send_many(ngx, [late, good])]
    assert sts == [429, 200], sts
    assert upstream.count == 2
