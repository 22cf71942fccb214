"""Credentials the platforms use (issue 17, item 3): API-key header names
(toll_key_header), imported one-part keys (tollctl key import and
toll_key_import_prefix), a JWT with an API key (toll_jwt_with_key), and a
token in the query string (toll_query_token) that neither the upstream nor
the logs ever see.

Refusals come first; each case runs twice, so that a cache entry left by
the first request shows up as a different answer the second time.
"""

import json
import time
import urllib.parse

import pytest

from helpers import client
from helpers import jwt as J
from helpers.keys import raw_key, redis_name, tollctl
from helpers.problem import check_problem, without_request_id
from helpers.procs import PROXY, wait_for
from helpers.upstream import header_values


SECRET_LOG = ("    log_format secrets 'req=$request|uri=$request_uri"
              "|args=$args|q=$query_string|a=$arg_access_token"
              "|h=$http_x_service_token|k=$http_x_api_key"
              "|z=$http_authorization|p=$server_protocol';\n")

OPAQUE = "test_sk_4eC39HqLyjWDarjtT1zdp7dc"


def send(ngx, headers=(), path="/api"):
    return client.tagged_request(ngx.port, headers, path)


def loc(path, extra="", proxy=PROXY):
    return "        location %s {\n            toll on;\n            %s\n" \
           "            %s\n        }\n" % (path, extra, proxy)


@pytest.fixture
def keys(redis_server):
    class K:
        gold = raw_key(redis_server, owner="acme", plan="gold")
        other = raw_key(redis_server, owner="initech")
    return K


def secrets_log(ngx):
    return ngx.read(ngx.prefix + "/logs/secrets.log")


@pytest.fixture
def gate(start_nginx, tmp_path):
    def make(locations, http_extra=""):
        ngx = start_nginx(http_extra=http_extra + SECRET_LOG
                          + "    access_log logs/secrets.log secrets;\n",
                          locations=locations, toll_log=True)
        return ngx
    return make


# ------------------------------------------------------ toll_key_header


def test_key_header_names(gate, upstream, keys):
    ngx = gate(loc("/svc/", "toll_key_header X-Service-Token;")
               + loc("/two/", "toll_key_header X-Service-Token X-API-Key;")
               + loc("/api/"))
    k, o = keys.gold, keys.other
    for _ in range(2):
        # refusals first: the default name no longer counts where replaced
        # (it is then a header like any other, sent upstream and loggable)
        r, _ = send(ngx, [("X-API-Key", "tk_stray:" + "s" * 40)], "/svc/x")
        check_problem(r, 401, "unauthorized")
        # not a credential there: a header like any (and logged like one)
        r, _ = send(ngx, [("X-Service-Token", "tk_stray:" + "s" * 40)],
                    "/api/x")
        check_problem(r, 401, "unauthorized")
        # two key headers, of one name or two, are two credentials
        for creds in ([("X-Service-Token", k.token)] * 2,
                      [("X-Service-Token", k.token), ("X-API-Key", k.token)],
                      [("X-Service-Token", k.token), ("X-API-Key", o.token)],
                      [("X-Service-Token", k.token),
                       ("Authorization", "Bearer " + o.token)]):
            r, _ = send(ngx, creds, "/two/x")
            check_problem(r, 400, "ambiguous_credentials")

        for path, creds in (
                ("/svc/x", [("X-Service-Token", k.token)]),
                ("/svc/x", [("x-service-token", k.token)]),
                ("/svc/x", [("Authorization", "Bearer " + k.token)]),
                ("/svc/x", [("X-Service-Token", k.token),
                            ("Authorization", "Bearer " + k.token)]),
                ("/two/x", [("X-API-Key", k.token)]),
                ("/two/x", [("X-Service-Token", k.token)])):
            upstream.reset()
            r, _ = send(ngx, creds, path)
            assert r.status == 200, (path, creds, r, r.body)
            req = upstream.last
            assert header_values(req, "X-Toll-Buyer") == ["acme"]
            for name in ("X-Service-Token", "Authorization", "X-API-Key"):
                if path == "/svc/x" and name == "X-API-Key":
                    continue
                assert header_values(req, name) == [], req["headers"]

    # the header's value is in no log line, passed or refused
    text = ngx.logs_text()
    assert [line for line in text.splitlines()
            if k.secret in line or o.secret in line] == []


def test_key_header_config(nginx_t):
    base = "toll_redis 127.0.0.1:6379; toll_zone 1m;\n"
    for bad, why in (("toll_key_header Authorization;", "invalid header"),
                     ("toll_key_header X-Toll-Key;", "invalid header"),
                     ("toll_key_header X_Key;", "invalid header"),
                     ("toll_key_header X-A X-a;", "duplicate header"),
                     ("toll_key_header A B C D E;", "at most 4"),
                     ("toll_key_header \"X Key\";", "invalid header"),
                     ("toll_key_import_prefix a:b;", "invalid prefix"),
                     ("toll_key_import_prefix %s;" % ("p" * 33),
                      "invalid prefix"),
                     ("server { location / { toll_query_token maybe; } }",
                      "invalid value"),
                     ("server { location / { toll_query_token on "
                      "name=a&b; } }", "invalid name"),
                     ("toll_query_token on;", "not allowed")):
        rc, out, _ = nginx_t(base + bad)
        assert rc != 0 and why in out, (bad, out)
    rc, out, _ = nginx_t(base + "toll_key_header X-Service-Token X-API-Key;"
                         "toll_key_import_prefix test_sk_ live_sk_;"
                         "toll_jwt_with_key on;"
                         "server { location / { toll_query_token on "
                         "name=token; } }")
    assert rc == 0, out


# ------------------------------------------------------- imported keys


def test_imported_key(gate, upstream, redis_server, keys):
    doc = json.loads(tollctl(redis_server, "key", "import", "--token",
                             OPAQUE, "--owner", "stripe-buyer", "--plan",
                             "gold").stdout)
    key_id = doc["key_id"]
    assert key_id.startswith("ik_") and len(key_id) == 35, doc
    rec = redis_server.client.hgetall(redis_name(key_id))
    # stored hashed like every key; the token itself nowhere in Redis
    assert rec["owner"] == "stripe-buyer"
    assert OPAQUE not in json.dumps(rec)
    assert all(OPAQUE not in str(redis_server.client.dump(n))
               for n in redis_server.client.keys("*"))
    # twice is refused, the first record stays
    r = tollctl(redis_server, "key", "import", "--token", OPAQUE,
                "--owner", "x", check=False)
    assert r.returncode != 0 and b"imported already" in r.stderr
    for bad in ("short_sk_1", OPAQUE + ":x", OPAQUE + ".x", OPAQUE + "%"):
        r = tollctl(redis_server, "key", "import", "--token", bad,
                    "--owner", "x", check=False)
        assert r.returncode == 65, (bad, r.stderr)

    live = "live_sk_" + "Z" * 30
    tollctl(redis_server, "key", "import", "--token", live, "--owner", "l")
    unlisted = "other_sk_" + "Q" * 30
    tollctl(redis_server, "key", "import", "--token", unlisted, "--owner",
            "u")

    ngx = gate(loc("/imp/", "toll_key_import_prefix test_sk_ live_sk_;")
               + loc("/api/"))
    unknown = None
    for _ in range(2):
        for path, tok in (("/imp/x", OPAQUE[:-1] + "X"),   # wrong
                          ("/imp/x", unlisted),            # not listed
                          ("/api/x", OPAQUE),              # no prefixes
                          # its id and itself as a two-part token
                          ("/api/x", key_id + ":" + OPAQUE),
                          ("/imp/x", key_id + ":" + OPAQUE),
                          ("/imp/x", "test_sk_" + "a" * 300)):
            r, _ = send(ngx, [("X-API-Key", tok)], path)
            check_problem(r, 401, "unauthorized")
            # the same 401 as an unknown two-part key
            r2, _ = send(ngx, [("X-API-Key", "tk_nosuch:" + "s" * 40)],
                         path)
            assert without_request_id(r) == without_request_id(r2)
        for creds in ([("X-API-Key", OPAQUE)],
                      [("Authorization", "Bearer " + OPAQUE)],
                      [("Authorization", "Bearer " + OPAQUE),
                       ("X-API-Key", OPAQUE)]):
            upstream.reset()
            r, t = send(ngx, creds, "/imp/x")
            assert r.status == 200, (r, r.body)
            assert header_values(upstream.last, "X-Toll-Key-Id") == [key_id]
            assert header_values(upstream.last, "X-Toll-Buyer") == \
                ["stripe-buyer"]
            (line,) = ngx.wait_toll_log(t)
            assert line["key"] == key_id
        r, _ = send(ngx, [("X-API-Key", live)], "/imp/x")
        assert r.status == 200
    assert OPAQUE not in ngx.logs_text()


# ------------------------------------------------- a JWT with an API key


@pytest.fixture(scope="module")
def jwtkeys(tmp_path_factory):
    return J.Keys(tmp_path_factory.mktemp("jwtkeys"))


def jwt_http(jk):
    return "\n".join([jk.directives(), "    toll_jwt on;",
                      "    toll_jwt_issuer %s;" % J.ISSUER,
                      "    toll_jwt_audience %s;" % J.AUDIENCE, ""])


def test_jwt_with_key(gate, upstream, keys, jwtkeys):
    ngx = gate(loc("/sa/", "toll_jwt_with_key on;") + loc("/api/")
               + loc("/wsj/", "toll_query_token on;")
               + loc("/wsk/", "toll_query_token on; toll_jwt_with_key on;"),
               http_extra=jwt_http(jwtkeys))
    now = int(time.time())
    k, o = keys.gold, keys.other
    org = J.token(jwtkeys, payload=J.claims(now, sub="acme"))
    stranger = J.token(jwtkeys, payload=J.claims(now, sub="initech"))
    expired = J.token(jwtkeys, payload=J.claims(now - 1000, sub="acme"))
    for _ in range(2):
        # off by default: two credentials
        r, _ = send(ngx, [("Authorization", "Bearer " + org),
                          ("X-API-Key", k.token)], "/api/x")
        check_problem(r, 400, "ambiguous_credentials")
        # on: either failing is the one 401
        for creds in ([("Authorization", "Bearer " + expired),
                       ("X-API-Key", k.token)],
                      [("Authorization", "Bearer " + org),
                       ("X-API-Key", k.key_id + ":" + "w" * 43)],
                      [("Authorization", "Bearer " + org),
                       ("X-API-Key", "tk_nosuch:" + "s" * 40)],
                      # a token of one buyer with the key of another
                      [("Authorization", "Bearer " + stranger),
                       ("X-API-Key", k.token)],
                      [("Authorization", "Bearer " + org),
                       ("X-API-Key", o.token)]):
            r, _ = send(ngx, creds, "/sa/x")
            check_problem(r, 401, "unauthorized")
        # the key bills: its owner, id and plan go upstream
        upstream.reset()
        r, t = send(ngx, [("Authorization", "Bearer " + org),
                          ("X-API-Key", k.token)], "/sa/x")
        assert r.status == 200, (r, r.body)
        req = upstream.last
        assert header_values(req, "X-Toll-Buyer") == ["acme"]
        assert header_values(req, "X-Toll-Key-Id") == [k.key_id]
        assert header_values(req, "X-Toll-Plan") == ["gold"]
        assert header_values(req, "Authorization") == []
        assert header_values(req, "X-API-Key") == []
        (line,) = ngx.wait_toll_log(t)
        assert line["key"] == k.key_id and line["plan"] == "gold"
        # a JWT alone still passes there, as the JWT's buyer
        r, _ = send(ngx, [("Authorization", "Bearer " + org)], "/sa/x")
        assert r.status == 200
        # a JWT in the query string: alone, or with a key where allowed
        r, _ = send(ngx, [("X-API-Key", k.token)],
                    "/wsj/x?access_token=" + org)
        check_problem(r, 400, "ambiguous_credentials")
        r, _ = send(ngx, [("X-API-Key", k.token)],
                    "/wsk/x?access_token=" + stranger)
        check_problem(r, 401, "unauthorized")
        for path, creds in (("/wsj/x?access_token=" + org, []),
                            ("/wsk/x?access_token=" + org,
                             [("X-API-Key", k.token)])):
            upstream.reset()
            r, _ = send(ngx, creds, path)
            assert r.status == 200, (path, r, r.body)
            assert upstream.last["path"] == path.split("?")[0]
            assert header_values(upstream.last, "X-Toll-Buyer") == ["acme"]
    assert org.split(".")[2] not in ngx.logs_text()


# -------------------------------------------------------- query tokens


QUERY_LOCS = (loc("/ws/", "toll_query_token on;")
              + loc("/wsu/", "toll_query_token on;",
                    PROXY.replace("http://backend", "http://backend/up/"))
              + loc("/named/", "toll_query_token on name=token;")
              + loc("/api/"))


def test_query_token(gate, upstream, keys):
    ngx = gate(QUERY_LOCS)
    k, o = keys.gold, keys.other
    enc = urllib.parse.quote(k.token, safe="")     # ':' as %3A
    for _ in range(2):
        # refusals first: not opted in, malformed, huge, twice, ambiguous
        for path, creds, status in (
                ("/api/x?access_token=tk_stray:" + "s" * 40, [], 401),
                ("/ws/x?access_token=", [], 401),
                ("/ws/x?access_token", [], 401),
                ("/ws/x?access_token=%zz" + k.token, [], 401),
                ("/ws/x?access_token=" + k.token + "%4", [], 401),
                ("/ws/x?access_token=" + "a" * 6000, [], 401),
                ("/ws/x?access_token=%s&access_token=%s"
                 % (k.token, k.token), [], 400),
                ("/ws/x?access_token=%s&ACCESS%%5FTOKEN=%s"
                 % (k.token, o.token), [], 400),
                ("/ws/x?access_token=" + k.token,
                 [("X-API-Key", o.token)], 400),
                ("/ws/x?access_token=" + k.token,
                 [("Authorization", "Bearer " + o.token)], 400),
                ("/ws/x?access_token=" + o.key_id + ":" + "w" * 43,
                 [], 401),
                ("/named/x?access_token=tk_stray:" + "s" * 40, [], 401)):
            upstream.reset()
            r, _ = send(ngx, creds, path)
            assert r.status == status, (path, r, r.body)
            assert upstream.count == 0

        for path, sent in (
                ("/ws/x?a=1&access_token=%s&b=2" % k.token, "/ws/x?a=1&b=2"),
                ("/ws/x?access_token=%s" % k.token, "/ws/x"),
                ("/ws/x?access_token=%s&b=2" % enc, "/ws/x?b=2"),
                ("/ws/x?a=1&access_token=%s" % k.token, "/ws/x?a=1"),
                ("/wsu/x?a=1&access_token=%s&b=2" % k.token,
                 "/up/x?a=1&b=2"),
                ("/wsu/x?access_token=%s" % k.token, "/up/x"),
                ("/named/x?token=%s&access_token=keep" % k.token,
                 "/named/x?access_token=keep")):
            for creds in ([], [("X-API-Key", k.token)]):
                upstream.reset()
                r, _ = send(ngx, creds, path)
                assert r.status == 200, (path, r, r.body)
                assert upstream.last["path"] == sent, (path, upstream.last)
                assert header_values(upstream.last, "X-Toll-Buyer") == \
                    ["acme"]

    # nowhere in the logs: $request, $request_uri, $args, $arg_...
    text = ngx.logs_text()
    assert [line for line in text.splitlines()
            if k.secret in line or o.secret in line or "w" * 43 in line] \
        == []
    lines = secrets_log(ngx).splitlines()
    assert any(line.startswith("req=GET /ws/x?a=1&b=2 HTTP/1.1|"
                               "uri=/ws/x?a=1&b=2|args=a=1&b=2|")
               for line in lines), lines
    assert any(line.startswith("req=GET /ws/x HTTP/1.1|uri=/ws/x|args=|")
               for line in lines), lines
    assert all(line.endswith("|p=HTTP/1.1") for line in lines), lines


def test_query_token_redirect(gate, upstream, keys):
    # a rewrite's arguments are a copy: the token is cut from them too
    ngx = gate("""
        location /w/ {
            rewrite ^/w/(.*)$ /ws/$1?x=1 break;
            toll on;
            toll_query_token on;
            %s
        }
    """ % PROXY)
    k = keys.gold
    upstream.reset()
    r, _ = send(ngx, [], "/w/y?access_token=%s&b=2" % k.token)
    assert r.status == 200, (r, r.body)
    assert upstream.last["path"] == "/ws/y?x=1&b=2", upstream.last
    assert k.secret not in ngx.logs_text()


def test_query_token_http2(gate, upstream, keys):
    # HTTP/2 builds its request line apart from the :path: both are cut
    import subprocess
    from helpers.procs import free_port
    port = free_port()
    ngx = gate("        listen 127.0.0.1:%d http2;\n" % port + QUERY_LOCS)
    k = keys.gold
    for path, sent in (("/ws/x?a=1&access_token=%s&b=2" % k.token,
                        "/ws/x?a=1&b=2"),
                       ("/wsu/x?access_token=%s" % k.token, "/up/x")):
        upstream.reset()
        out = subprocess.run(["/usr/bin/nghttp", "-n", "-s",
                              "http://127.0.0.1:%d%s" % (port, path)],
                             capture_output=True, text=True, timeout=30)
        assert " 200 " in out.stdout, out.stdout
        assert upstream.last["path"] == sent, upstream.last
    lines = secrets_log(ngx).splitlines()
    assert any(line.startswith("req=GET /ws/x?a=1&b=2 HTTP/2.0|"
                               "uri=/ws/x?a=1&b=2|args=a=1&b=2|")
               for line in lines), lines
    assert [line for line in ngx.logs_text().splitlines()
            if k.secret in line] == []


def test_import_from_stdin(redis_server):
    import subprocess
    from helpers.keys import tollctl_path
    tok = "live_sk_" + "Y" * 40
    r = subprocess.run([tollctl_path(), "--redis", redis_server.address,
                        "key", "import", "--token", "-", "--owner", "acme"],
                       input=(tok + "\n").encode(), capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert tok not in r.stdout.decode()
    rec = redis_server.client.hgetall(redis_name(doc["key_id"]))
    assert rec["owner"] == "acme" and rec["status"] == "active"
    import hashlib
    assert rec["secret_sha256"] == hashlib.sha256(tok.encode()).hexdigest()
    r = subprocess.run([tollctl_path(), "--redis", redis_server.address,
                        "key", "import", "--token", "-", "--owner", "acme"],
                       input=(tok + "\n").encode(), capture_output=True,
                       timeout=30)
    assert r.returncode == 73, r


def test_query_token_of_a_request_ended_before_the_gate(gate, upstream,
                                                        keys):
    """limit_req refuses before toll's access phase reads the token: the
    access log still never sees it."""
    k = keys.gold
    ngx = gate(loc("/ws/", "toll_query_token on;\n"
                   "            limit_req zone=one nodelay;"),
               http_extra="    limit_req_zone $binary_remote_addr "
                          "zone=one:1m rate=1r/m;\n")
    got = [send(ngx, [], "/ws/x?a=1&access_token=" + k.token)[0].status
           for _ in range(3)]
    assert got[0] == 200 and 503 in got[1:], got
    wait_for(lambda: secrets_log(ngx).count("\n") >= 3, 5,
             what="three access log lines")
    log = secrets_log(ngx)
    assert k.secret not in log, log
    assert log.count("req=GET /ws/x?a=1 HTTP/1.1|") == 3, log


def test_query_token_inside_if_and_limit_except(gate, upstream, keys):
    """An if or limit_except inside the location is the same location to
    its clients: the query token is read there too."""
    k = keys.gold
    ngx = gate(loc("/ws/", "toll_query_token on;\n"
                   "            if ($http_upgrade) { set $ws 1; }")
               + loc("/le/", "toll_query_token on name=token;\n"
                     "            limit_except GET { deny all; }"))
    for path in ("/ws/x?access_token=", "/le/x?token="):
        r, _ = send(ngx, [("Upgrade", "websocket")], path + k.token)
        assert r.status == 200, (path, r, r.body)
        assert k.secret not in upstream.last["path"]
    r, _ = send(ngx, [], "/le/x?token=" + k.token)
    assert r.status == 200, r
    wait_for(lambda: secrets_log(ngx).count("\n") >= 3, 5,
             what="three access log lines")
    assert k.secret not in secrets_log(ngx)


def test_query_without_a_token_reaches_the_upstream_as_sent(gate, upstream,
                                                            keys):
    ngx = gate(loc("/ws/", "toll_query_token on;"))
    for q in ("a=1&&b=2", "a=1&", "&a=1", "a=1&b=%zz&", "a"):
        r, _ = send(ngx, [("X-API-Key", keys.gold.token)], "/ws/x?" + q)
        assert r.status == 200, (q, r)
        assert upstream.last["path"] == "/ws/x?" + q, (q, upstream.last)
