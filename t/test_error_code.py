"""toll_error_code: a refusal's code as a platform's clients spell it, in
both error formats; everything else about the answer stays toll's."""

import pytest

from helpers import client
from helpers.keys import make_key
from helpers.procs import PROXY


HTTP = "    toll_redis 127.0.0.1:6379;\n    toll_zone 1m;\n"


@pytest.mark.parametrize("line,msg", [
    ("toll_error_code rate_limit RATE;", 'unknown code "rate_limit"'),
    ("toll_error_code rate_limited \"RATE LIMIT\";", "invalid name"),
    ("toll_error_code rate_limited \"\";", "invalid name"),
    ("toll_error_code rate_limited %s;" % ("X" * 65), "invalid name"),
    ("toll_error_code rate_limited A\"B;", "invalid name"),
    ("toll_error_code rate_limited A; toll_error_code rate_limited B;",
     'code "rate_limited" is renamed twice'),
    ("toll_error_code rate_limited;", "invalid number of arguments"),
])
def test_bad_values_refused(nginx_t, line, msg):
    rc, out, _ = nginx_t(HTTP + "    " + line + "\n")
    assert rc != 0, out
    assert msg in out, out


def test_good_values_pass(nginx_t):
    rc, out, _ = nginx_t(HTTP + "    toll_error_code rate_limited "
                         "RATE_LIMIT_EXCEEDED;\n"
                         "    toll_error_code unauthorized x.y-Z_9;\n"
                         "    server { location / { toll_error_code "
                         "forbidden FORBIDDEN; } }\n")
    assert rc == 0, out


LOCATIONS = """
        toll_error_code unauthorized UNAUTHORIZED;
        location /renamed/ {{ toll on; {proxy} }}
        location /envelope/ {{
            toll on;
            toll_error_format envelope;
            {proxy}
        }}
        location /own/ {{
            toll on;
            toll_error_code rate_limited RATE_LIMIT_EXCEEDED;
            {proxy}
        }}
        location /plain/ {{ toll on; toll_error_code unauthorized
                           unauthorized; {proxy} }}
"""


def test_renamed_in_both_formats_and_inherited(start_nginx):
    ngx = start_nginx(locations=LOCATIONS.format(proxy=PROXY))
    r = client.request(ngx.port, "GET", "/renamed/x")
    assert r.status == 401
    assert r.json()["code"] == "UNAUTHORIZED", r.body
    assert r.header("WWW-Authenticate") == 'Bearer realm="toll"'
    r = client.request(ngx.port, "GET", "/envelope/x")
    assert r.status == 401
    assert r.json()["error"]["code"] == "UNAUTHORIZED", r.body
    # a level that names a code replaces the list it would inherit
    r = client.request(ngx.port, "GET", "/own/x")
    assert r.json()["code"] == "unauthorized", r.body
    r = client.request(ngx.port, "GET", "/plain/x")
    assert r.json()["code"] == "unauthorized", r.body


def test_every_401_still_alike(start_nginx, redis_server):
    ngx = start_nginx(locations=LOCATIONS.format(proxy=PROXY))
    key = make_key(redis_server, owner="acme")
    bodies = set()
    for headers in ([], [("Authorization", "Bearer nope")],
                    [("X-API-Key", key.key_id + ":" + "w" * 43)]):
        r = client.request(ngx.port, "GET", "/renamed/x", headers)
        doc = r.json()
        doc.pop("request_id")
        bodies.add(repr(sorted(doc.items())))
    assert len(bodies) == 1, bodies
