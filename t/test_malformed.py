"""A generated corpus of malformed credentials, in both headers.

Every answer must be a refusal (400 or 401; nginx's own 400 for a header
it will not parse is fine), nothing may reach the upstream, and no worker
may crash.  Requests go out as raw bytes so that NUL, CR, LF, bytes above
0x7f and 8 KiB values arrive as written.
"""

import base64
import random

import pytest

from helpers import client
from helpers.keys import raw_key
from helpers.problem import check_problem


SEED = 20240611

# bytes that may not appear in a key id or secret ([A-Za-z0-9_-] only)
BAD_CHARS = ([bytes([c]) for c in b" !\"#$%&'()*+,./;<=>?@[\\]^`{|}~"]
             + [bytes([c]) for c in (0x01, 0x07, 0x08, 0x09, 0x0b, 0x0c,
                                     0x1b, 0x1f, 0x7f, 0x80, 0xa0, 0xff)]
             + ["é".encode(), "\u202e".encode(), "\u200b".encode(),
                "\ufeff".encode(), b"\x00"])


class Case:
    def __init__(self, header, value, why, multi=False):
        self.header = header          # b"Authorization" or b"X-API-Key"
        self.value = value            # bytes, sent as they are
        self.why = why
        # CR or LF can split the value into several header lines, and
        # so into several credentials: a 400 "ambiguous" is right then
        self.multi = multi or b"\r" in value or b"\n" in value

    def __repr__(self):
        return "<%s %s: %r>" % (self.why, self.header.decode(),
                                self.value[:80])


def _ws_strip(b):
    return b.strip(b" \t")


def _token_values(key):
    """Malformed tokens derived from a real key, so that no mutation of a
    valid token can slip through."""
    kid, sec = key.key_id.encode(), key.secret.encode()
    tok = kid + b":" + sec
    out = []

    def add(v, why):
        out.append((v, why))

    # shape
    add(b"", "empty")
    add(b":", "only colon")
    add(b"::", "two colons")
    add(kid, "no colon, id only")
    add(sec, "no colon, secret only")
    add(kid + sec, "no colon, id and secret")
    add(kid + b":", "empty secret")
    add(b":" + sec, "empty id")
    add(kid + b"::" + sec, "double colon")
    add(tok + b":", "trailing colon")
    add(b":" + tok, "leading colon")
    add(tok + b":" + sec, "three parts")
    add(kid + b";" + sec, "semicolon separator")
    add(kid + b"=" + sec, "equals separator")
    add(kid + b" : " + sec, "spaced colon")
    add(kid + b": " + sec, "space after colon")
    add(kid + b" :" + sec, "space before colon")
    add(tok + b" " + tok, "token twice")
    add(tok + b"," + tok, "token list")
    add(b'"' + tok + b'"', "quoted token")
    add(base64.b64encode(tok), "base64 of the token")
    for n in (1, 8, 15):
        add(kid + b":" + sec[:n], "secret of %d chars" % n)
    add(b"a" * 65 + b":" + sec, "id of 65 chars")
    add(b"a" * 1000 + b":" + sec, "id of 1000 chars")
    add(kid + b":" + b"s" * 257, "secret of 257 chars")
    add(kid + b":" + b"s" * 4000, "secret of 4000 chars")
    add(b"a" * 4000 + b":" + b"b" * 4000, "8 KiB token, both too long")
    add(b"a" * 8150, "8 KiB without colon")
    add(b":" * 8150, "8 KiB of colons")
    add(b"a" * 9000 + b":" + sec, "over 8 KiB (nginx's buffer)")
    add(b"x" * 20000, "20 KiB")
    add(b"%s:%s" % (b"%s%n%x", sec), "format string in id")
    add(kid + b":" + b"%s%s%s%s%n%n%n%n", "format string in secret")
    add(b"../../etc/passwd:" + sec, "path in id")
    add(b"*:" + sec, "glob in id")
    add(b"toll:key:{" + kid + b"}:" + sec, "redis name as id")
    add(kid + b"}:" + sec, "brace in id")
    add(b"\x00" + tok, "leading NUL")
    add(tok + b"\x00", "trailing NUL")
    add(kid + b"\x00:" + sec, "NUL before colon")
    add(kid + b":\x00" + sec, "NUL after colon")
    add(kid + b":" + sec + b"\x00" + b"a" * 10, "NUL inside secret")
    add(tok.upper() if tok.upper() != tok else tok.lower(), "case changed")
    # CR / LF attempts
    add(tok + b"\rx", "CR and a byte after the token")
    add(b"x\rX-API-Key: " + tok, "bare CR then header")
    add(b"x\r\nX-API-Key: " + tok, "CRLF then X-API-Key")
    add(b"x\nX-API-Key: " + tok, "LF then X-API-Key")
    add(b"x\r\nAuthorization: Bearer " + tok, "CRLF then Authorization")
    add(b"x\r\n\r\n", "CRLF CRLF")
    add(b"\r\nX-API-Key: " + tok, "empty then X-API-Key")
    add(kid + b":\r\n " + sec, "obs-fold inside token")
    add(kid + b":\r\n\t" + sec, "obs-fold with tab")
    add(b"x\r\nContent-Length: 5\r\n\r\nhello", "smuggled body")
    # one byte of the real token replaced by a byte no token may hold,
    # at the edges and in the middle of each half
    positions = {0, len(kid) // 2, len(kid) - 1, len(kid) + 1,
                 len(kid) + 1 + len(sec) // 2, len(tok) - 1}
    for pos in sorted(positions):
        for c in BAD_CHARS:
            add(tok[:pos] + c + tok[pos + 1:],
                "byte %d replaced by %r" % (pos, c))
    # the colon replaced
    for c in BAD_CHARS[:20]:
        add(kid + c + sec, "colon replaced by %r" % c)
    return out


def _bearer_only_values(key):
    """Authorization values that differ from "Bearer <token>" in the
    scheme or in the space after it."""
    tok = key.token.encode()
    out = []
    for v, why in [
            (b"Bearer", "scheme only"),
            (b"Bearer ", "scheme and space"),
            (b"Bearer \t \t", "scheme and blanks"),
            (b"Bearer:" + tok, "colon after scheme"),
            (b"Bearer=" + tok, "equals after scheme"),
            (b"Bearer," + tok, "comma after scheme"),
            (b"Bearer" + tok, "no space after scheme"),
            (b"Bearer\x00" + tok, "NUL after scheme"),
            (b"Bearer\x0b" + tok, "VT after scheme"),
            (b"Bearer\x0c" + tok, "FF after scheme"),
            (b"Bearer\xa0" + tok, "NBSP after scheme"),
            (b"Bearer\xc2\xa0" + tok, "UTF-8 NBSP after scheme"),
            (b"Bearer\r\n " + tok, "folded after scheme"),
            (b"Bear " + tok, "short scheme"),
            (b"Bearers " + tok, "long scheme"),
            (b"Bearer Bearer " + tok, "scheme twice"),
            (b"Bearer " + tok + b" extra", "trailing word"),
            (b"Bearer " + tok + b",", "trailing comma"),
            (b"Bearer " + tok + b";", "trailing semicolon"),
            (b"Bearer " + tok + b"\t" + tok, "two tokens"),
            (b"B\xe9arer " + tok, "non-ASCII scheme"),
            (b"Basic " + base64.b64encode(tok), "Basic"),
            (b"Token " + tok, "Token scheme"),
            (b"ApiKey " + tok, "ApiKey scheme"),
            (b"Digest username=\"" + tok + b"\"", "Digest"),
            (b"Negotiate YIIC", "Negotiate"),
            (tok, "token without scheme"),
            (b" " + tok, "token without scheme, leading space"),
            (b"Bearer " + b"a" * 8180, "8 KiB bearer"),
            (b"Bearer " + b"\xff" * 300, "high bytes"),
    ]:
        out.append((v, why))
    return out


def _random_values(key, rng, n):
    """Seeded fuzz: random strings over a hostile alphabet, and random
    edits of the real token (never one that trims back to it)."""
    tok = key.token.encode()
    alphabet = (b"abcXYZ019_-" * 4 + b":" * 6 + b" \t" * 2
                + bytes(range(0, 32)) + b"\x7f\x80\xc3\xa9\xff%\"\\{}")
    out = []
    for i in range(n):
        ln = rng.choice([0, 1, 2, 16, 17, 43, 60, 64, 65, 100, 300])
        v = bytes(rng.choice(alphabet) for _ in range(ln))
        out.append((v, "random %d" % i))
    # no CR or LF in edits of the token: nginx ends a header line at
    # "\r\r\n" or "\n" too, which can leave the valid token alone on it
    edit_alphabet = bytes(c for c in alphabet if c not in b"\r\n")
    i = 0
    while len(out) < 2 * n:
        v = bytearray(tok)
        for _ in range(rng.randint(1, 3)):
            op = rng.choice(("insert", "delete", "replace"))
            pos = rng.randrange(len(v) + (op == "insert"))
            if op == "insert":
                v.insert(pos, rng.choice(edit_alphabet))
            elif op == "delete" and len(v) > 1:
                del v[pos]
            else:
                v[pos] = rng.choice(edit_alphabet)
        v = bytes(v)
        i += 1
        if _ws_strip(v) == tok:
            continue      # nginx trims blanks around a value: valid again
        out.append((v, "edit %d" % i))
    return out


def build_corpus(key):
    rng = random.Random(SEED)
    cases = []
    for v, why in _token_values(key) + _random_values(key, rng, 120):
        cases.append(Case(b"X-API-Key", v, why))
        # for a bearer token the blanks after the scheme are allowed, so
        # a value that trims back to the token would be valid again
        if _ws_strip(v) != key.token.encode():
            cases.append(Case(b"Authorization", b"Bearer " + v, why))
    for v, why in _bearer_only_values(key):
        cases.append(Case(b"Authorization", v, why))
    # the same values under other spellings of the header names
    for v, why in _bearer_only_values(key)[:10]:
        cases.append(Case(b"authorization", v, why + " (lower-case name)"))
    for v, why in _token_values(key)[:20]:
        cases.append(Case(b"X-Api-Key", v, why + " (mixed-case name)"))
    return cases


def _answer_ok(case, r):
    """An answer acceptable for a malformed credential, or a reason."""
    if r.status == 401:
        check_problem(r, 401, "unauthorized")
        return None
    if r.status == 400:
        ctype = r.header("content-type") or ""
        if ctype == "application/problem+json":
            check_problem(r, 400, "ambiguous_credentials")
            if not case.multi:
                return "one credential answered as ambiguous"
        return None
    return "status %d" % r.status


def test_malformed_corpus(start_nginx, upstream, redis_server):
    ngx = start_nginx()
    key = raw_key(redis_server, owner="acme", plan="gold")
    cases = build_corpus(key)
    assert len(cases) >= 500, len(cases)
    assert len({(c.header, c.value) for c in cases}) >= 500

    r = client.request(ngx.port, path="/api", headers=[key.bearer()])
    assert r.status == 200, r
    upstream.reset()
    master, workers = ngx.master_pid, ngx.worker_pids()

    failures = []
    statuses = {}
    for round_ in range(2):
        for case in cases:
            raw = client.build_request("GET", "/api", [(case.header,
                                                        case.value)])
            try:
                r = client.send_raw(ngx.port, raw)
            except (client.NoResponse, OSError) as e:
                failures.append((case, "no answer: %s" % e))
                continue
            statuses[r.status] = statuses.get(r.status, 0) + 1
            try:
                why = _answer_ok(case, r)
            except AssertionError as e:
                why = "bad problem answer: %s" % e
            if why:
                failures.append((case, why, r.status, r.body[:300]))
            if upstream.count:
                failures.append((case, "reached the upstream",
                                 upstream.requests))
                upstream.reset()

    assert not failures, "%d of %d answers wrong, first ones:\n%s" % (
        len(failures), 2 * len(cases),
        "\n".join(repr(f) for f in failures[:25]))
    print("malformed corpus: %d cases x2, statuses %r"
          % (len(cases), statuses))
    assert statuses.get(401, 0) > len(cases), statuses
    assert upstream.count == 0
    assert ngx.master_pid == master and ngx.worker_pids() == workers, \
        "a worker was replaced: it crashed"

    # the gate still works afterwards
    r = client.request(ngx.port, path="/api", headers=[key.x_api_key()])
    assert r.status == 200, r
    assert upstream.count == 1


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_credential_split_by_newline_is_ambiguous(start_nginx, upstream,
                                                  redis_server, header):
    """A value that carries a second, valid credential after a line break
    is two credentials: refused, whatever the first one was."""
    ngx = start_nginx()
    key = raw_key(redis_server)
    tok = key.token.encode()
    prefix = b"Bearer " if header == "Authorization" else b""
    for junk in (b"x", b"", b"Bearer", prefix + tok):
        for sep in (b"\r\n", b"\n"):
            v = prefix + junk + sep + b"X-API-Key: " + tok
            raw = client.build_request("GET", "/api", [(header, v)])
            for _ in range(2):
                r = client.send_raw(ngx.port, raw)
                assert r.status in (400, 401), (v, r)
    assert upstream.count == 0
