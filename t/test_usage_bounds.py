"""toll_usage with names the writer did not choose.

The usage hashes in Redis are written by the meter with configured names,
but anything with access to Redis can write others: a provider of 5000
bytes, a hundred long service names, quotes, backslashes and control
characters.  toll_usage must answer with valid JSON that carries each name
as it is in Redis (docs/directives.md#toll_usage), whatever their length;
a buffer sized for names of 128 bytes wrote past its end.
"""

import datetime
import json

import pytest

from helpers import client
from helpers.keys import make_key

LOCATIONS = """
        location = /usage/me {
            toll on;
            toll_usage;
        }
"""


def today():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")


def put_usage(rc, buyer, rows, day=None):
    """rows: {service: (provider, calls, amount_micros)}, written as the
    meter writes a day's usage hash, and the day into the buyer's set."""
    day = day or today()
    name = "toll:usage:{%s}:%s" % (buyer, day)
    fields = {}
    for service, (provider, calls, amount) in rows.items():
        fields[service + ":provider"] = provider
        fields[service + ":calls"] = calls
        fields[service + ":paid_calls"] = calls
        fields[service + ":amount_micros"] = amount
    rc.hset(name, mapping=fields)
    rc.sadd("toll:usage:{%s}:days" % buyer, day)


def usage_me(ngx, key):
    r = client.request(ngx.port, path="/usage/me", headers=[key.bearer()])
    assert r.status == 200, (r, r.body)
    assert int(r.header("Content-Length")) == len(r.body), r.headers
    return json.loads(r.body)


def services_of(body):
    return {s["service"]: s for s in body["services"]}


CASES = [
    # (id, rows) each row service -> (provider, calls, amount_micros)
    ("long_provider", {"svc": ("p" * 5000, 3, 150000)}),
    ("long_service", {"s" * 3000: ("acme", 1, 1)}),
    ("many_long_services", {("svc%03d-" % i) + "x" * 200:
                            ("prov%03d-" % i + "y" * 300, i + 1, i)
                            for i in range(100)}),
    ("json_specials", {'sv"c\\1': ('ac"me\\', 1, 50000),
                       "tab\tnl\nnul\x00esc\x1b": ("ctl\x01\x1f\x7f", 2, 1)}),
]


@pytest.mark.parametrize("rows", [c[1] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_usage_names_from_redis(start_nginx, redis_server, rows):
    rc = redis_server.client
    ngx = start_nginx(locations=LOCATIONS)
    alice = make_key(redis_server, owner="alice")
    put_usage(rc, "alice", rows)

    # twice: the second answer comes from a worker that wrote the first
    for _ in range(2):
        body = usage_me(ngx, alice)
        got = services_of(body)
        assert sorted(got) == sorted(rows), sorted(got)
        for service, (provider, calls, amount) in rows.items():
            s = got[service]
            assert s["provider"] == provider, (service, s["provider"][:80])
            assert s["calls"] == calls and s["paid_calls"] == calls, s
        assert body["totals"]["calls"] == sum(
            v[1] for v in rows.values()), body["totals"]


def test_usage_long_buyer_and_names(start_nginx, redis_server):
    """The buyer's id at its longest (128) with names past any bound."""
    rc = redis_server.client
    ngx = start_nginx(locations=LOCATIONS)
    owner = "b" * 128
    k = make_key(redis_server, owner=owner)
    rows = {"x" * 4000: ("y" * 4000, 7, 7000000)}
    put_usage(rc, owner, rows)
    body = usage_me(ngx, k)
    assert body["buyer"] == owner
    s = services_of(body)["x" * 4000]
    assert s["provider"] == "y" * 4000 and s["amount"] == "7", s["amount"]
    assert body["totals"]["amount"] == "7", body["totals"]


def test_usage_negative_correction(start_nginx, redis_server):
    """A call counted at the gate, drained, then corrected at the end of
    the request (not sent upstream, an error not charged) leaves -1 in the
    day's new usage hash and +1 in the mirror of the drained one: the
    buyer's answer sums them, it does not refuse them."""
    rc = redis_server.client
    ngx = start_nginx(locations=LOCATIONS)
    alice = make_key(redis_server, owner="alice")
    day = today()
    # drained: two calls, charged
    rc.hset("toll:usage:{alice}:%s:drained" % day, mapping={
        "svc:provider": "acme", "svc:calls": 2, "svc:paid_calls": 2,
        "svc:amount_micros": 100000})
    # the correction of one of them, flushed after the drain
    rc.hset("toll:usage:{alice}:%s" % day, mapping={
        "svc:provider": "acme", "svc:calls": -1, "svc:paid_calls": -1,
        "svc:amount_micros": -50000, "svc:errors": 0})
    rc.sadd("toll:usage:{alice}:days", day)
    for _ in range(2):
        body = usage_me(ngx, alice)
        s = services_of(body)["svc"]
        assert (s["calls"], s["paid_calls"], s["amount"]) == (1, 1, "0.05"), s
        assert body["totals"]["amount"] == "0.05", body


@pytest.mark.allow_log(r"does not read as one")
@pytest.mark.parametrize("value", ["", "1.5", "+1", "1e3", " 1", "0x10",
                                   "9223372036854775808",
                                   "-9223372036854775809", "--1", "-"])
def test_usage_count_not_an_integer(start_nginx, redis_server, value):
    rc = redis_server.client
    ngx = start_nginx(locations=LOCATIONS)
    alice = make_key(redis_server, owner="alice")
    rc.hset("toll:usage:{alice}:%s" % today(), mapping={
        "svc:provider": "acme", "svc:calls": value})
    rc.sadd("toll:usage:{alice}:days", today())
    r = client.request(ngx.port, path="/usage/me", headers=[alice.bearer()])
    assert r.status == 500, (value, r, r.body)
