"""`nginx -t` refuses bad toll configuration with a message that names
what is wrong and where; good configuration passes, even with Redis
down (checking a config must not need the store)."""

import os
import re
import subprocess

import pytest

from conftest import module_path, nginx_env
from helpers.procs import NGINX_BIN, free_port


MARK = "# <-- under test"


def http_block(redis_line=None, zone_line="toll_zone 10m;", extra="",
               location="toll on;"):
    """An http{} body; the directive under test carries MARK so that the
    test knows its line number."""
    if redis_line is None:
        redis_line = "toll_redis 127.0.0.1:%d timeout=500ms;" % free_port()
    return """
    %s
    %s
    %s
    server {
        listen 127.0.0.1:%d;
        location / {
            %s
            return 200;
        }
    }
""" % (redis_line, zone_line, extra, free_port(), location)


def mark_line(text):
    for i, line in enumerate(text.splitlines(), 1):
        if MARK in line:
            return i
    raise AssertionError("no marked line in config")


def assert_refused(rc, out, text, *must_mention, line=True):
    """rc != 0 and one error line that mentions each of must_mention (a
    string, or a tuple of which any one will do) and the marked line.
    nginx's stock enum setter reports at [warn] level, the rest [emerg]."""
    assert rc != 0, "nginx -t accepted a bad config:\n%s\n%s" % (text, out)
    errors = [l for l in out.splitlines() if "[emerg]" in l or "[warn]" in l]
    assert len(errors) == 1, out
    msg = errors[0]
    for m in must_mention:
        alts = m if isinstance(m, tuple) else (m,)
        assert any(a in msg for a in alts), "%r not in %r" % (m, msg)
    if line:
        assert re.search(r"nginx\.conf:%d\b" % mark_line(text), msg), \
            "message does not point at line %d: %s" % (mark_line(text), msg)
    assert "test failed" in out, out
    return msg


def test_good_config_passes_with_redis_down(nginx_t):
    # nothing listens on the toll_redis port
    for redis_line in (
            None,
            "toll_redis 127.0.0.1:%d;" % free_port(),
            "toll_redis 127.0.0.1:%d timeout=250ms password=s3cret db=3;"
            % free_port(),
            "toll_redis unix:/tmp/toll-test-nonexistent.sock timeout=2s;"):
        text = http_block(redis_line, extra="""
    toll_cache_ttl 10s;
    toll_cache_negative_ttl 1s;
    toll_pass_credentials off;
    toll_log_level notice;""")
        rc, out, _ = nginx_t(text)
        assert rc == 0, out
        assert "syntax is ok" in out and "test is successful" in out, out


def test_toll_zone_and_redis_are_optional_when_unused(nginx_t):
    rc, out, _ = nginx_t(http_block(redis_line="", zone_line="",
                                    location="toll off;"))
    assert rc == 0, out


def test_toll_on_without_toll_redis(nginx_t):
    text = http_block(redis_line="", location="toll on; " + MARK)
    rc, out, _ = nginx_t(text)
    # the message may point at "toll on" or at the end of the block; it
    # must say what is missing
    assert_refused(rc, out, text, "toll_redis", line=False)


def test_toll_on_in_server_without_toll_redis(nginx_t):
    text = http_block(redis_line="", location="").replace(
        "listen", "toll on; " + MARK + "\n        listen")
    rc, out, full = nginx_t(text)
    assert_refused(rc, out, full, "toll_redis", line=False)


BAD_ADDRESSES = [
    "127.0.0.1:notaport",
    "127.0.0.1:0",
    "127.0.0.1:70000",
    "127.0.0.1:-1",
    "127.0.0.1:",
    ":6379",
    "unix:",
    "300.1.1.1:6379",
]


@pytest.mark.parametrize("addr", BAD_ADDRESSES)
def test_bad_redis_address(nginx_t, addr):
    text = http_block("toll_redis %s; %s" % (addr, MARK))
    rc, out, full = nginx_t(text)
    assert_refused(rc, out, full, addr)


BAD_TIMEOUTS = ["abc", "", "-1s", "10x", "1z"]


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_bad_redis_timeout(nginx_t, value):
    text = http_block("toll_redis 127.0.0.1:6379 timeout=%s; %s"
                      % (value, MARK))
    rc, out, full = nginx_t(text)
    assert_refused(rc, out, full, "timeout")


@pytest.mark.parametrize("param", ["foo=bar", "timeout", "retries=3",
                                   "TIMEOUT=1s", "db=abc", "db=-1"])
def test_bad_redis_parameter(nginx_t, param):
    text = http_block("toll_redis 127.0.0.1:6379 %s; %s" % (param, MARK))
    rc, out, full = nginx_t(text)
    assert_refused(rc, out, full, param.split("=")[0])


def test_toll_redis_twice(nginx_t):
    text = http_block(extra="toll_redis 127.0.0.1:6380; " + MARK)
    rc, out, full = nginx_t(text)
    assert_refused(rc, out, full, "toll_redis")


def test_toll_redis_without_address(nginx_t):
    text = http_block("toll_redis; " + MARK)
    rc, out, full = nginx_t(text)
    assert_refused(rc, out, full, "toll_redis")


def test_toll_redis_not_allowed_in_location(nginx_t):
    text = http_block(location="toll on; toll_redis 127.0.0.1:6379; "
                      + MARK)
    rc, out, full = nginx_t(text)
    assert_refused(rc, out, full, "toll_redis", "not allowed here")


@pytest.mark.parametrize("size", ["abc", "10q", "-1m", "0"])
def test_bad_toll_zone_size(nginx_t, size):
    text = http_block(zone_line="toll_zone %s; %s" % (size, MARK))
    rc, out, full = nginx_t(text)
    assert_refused(rc, out, full, "toll_zone")


@pytest.mark.parametrize("line", [
    "toll maybe;",
    "toll_cache_ttl forever;",
    "toll_cache_negative_ttl -5s;",
    "toll_pass_credentials yes;",
    "toll_log_level debug;",
    "toll_log_level loud;",
])
def test_bad_other_directives(nginx_t, line):
    text = http_block(extra=line + " " + MARK)
    rc, out, full = nginx_t(text)
    name, value = line.rstrip(";").split()
    assert_refused(rc, out, full, (name, '"%s"' % value))


def test_the_example_configuration_passes_nginx_t(tmp_path):
    """conf/nginx.conf.example is the drop-in config the docs point to:
    with the built module and a scratch prefix for its files, nginx -t
    accepts it as it is."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "conf", "nginx.conf.example")) as f:
        text = f.read()
    prefix = str(tmp_path)
    os.makedirs(os.path.join(prefix, "logs"))
    subs = [("/usr/lib/nginx/modules/ngx_http_toll_module.so",
             module_path()),
            ("/run/nginx.pid", prefix + "/logs/nginx.pid"),
            ("/var/log/nginx/", prefix + "/logs/")]
    for old, new in subs:
        assert old in text, old
        text = text.replace(old, new)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(text)
    r = subprocess.run([NGINX_BIN, "-t", "-p", prefix + "/", "-c", conf,
                        "-e", prefix + "/logs/error.log"],
                       env=nginx_env(prefix), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    assert "test is successful" in out, out


def service_locations(second):
    """Two locations selling service "s", the second one marked."""
    return http_block(location="toll on;", extra="""
    server {
        listen 127.0.0.1:%d;
        location /a/ {
            toll on;
            toll_service s provider=acme price=0.05;
            return 200;
        }
        location /b/ {
            toll on;
            %s %s
            return 200;
        }
    }""" % (free_port(), second, MARK))


def test_service_sold_by_two_providers_refused(nginx_t):
    """Usage is kept by service name, with one "<service>:provider" field:
    a second provider would take the first one's revenue."""
    rc, out, text = nginx_t(
        service_locations("toll_service s provider=globex price=0.07;"))
    assert_refused(rc, out, text,
                   'service "s" is sold by provider "acme" elsewhere',
                   "a service has one provider")


def test_service_with_two_free_tiers_refused(nginx_t):
    """The free tier is one grant per buyer and service name, leased from
    Redis: two sizes of it for one name would give the larger one through
    whichever location asks."""
    rc, out, text = nginx_t(service_locations(
        "toll_service s provider=acme price=0.05 free_calls=10;"))
    assert_refused(rc, out, text, 'service "s" has free_calls=0 elsewhere',
                   "a service has one free tier")


def test_service_sold_at_two_prices_by_one_provider_passes(nginx_t):
    for second in ("toll_service s provider=acme price=0.07;",
                   "toll_service s provider=acme price=0.05 "
                   "currency=USD;"):
        rc, out, text = nginx_t(service_locations(second))
        assert rc == 0, "%s\n%s" % (text, out)


def test_service_sold_in_two_currencies_refused(nginx_t):
    rc, out, text = nginx_t(service_locations(
        "toll_service s provider=acme price=0.05 currency=EUR;"))
    assert_refused(rc, out, text, 'service "s" is sold in USD elsewhere',
                   "a service has one currency")
