"""A reference platform's drop-in configuration (conf/examples/), started
as written, for the conformance suite.

The example is read from the repository and only the lines a provider is
told to CHANGE are rewritten, each of which must be found: the test's
Redis, its upstream, a free port, and /etc/toll/ (a directory of the test
that holds the files the example names).  What runs is what ships.
"""

import json
import os
import re
import time

from helpers.procs import free_port


EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "..", "..", "conf", "examples")

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "..", "..", "..", "shared", "reference")


def example_path(name):
    return os.path.normpath(os.path.join(EXAMPLES, name))


def render(name, redis_address, upstream_port, port, etc_dir):
    with open(example_path(name)) as f:
        text = f.read()
    subs = [
        (r"toll_redis 127\.0\.0\.1:6379", "toll_redis " + redis_address),
        (r"server 127\.0\.0\.1:8000;", "server 127.0.0.1:%d;"
         % upstream_port),
        (r"listen 8080;", "listen 127.0.0.1:%d;" % port),
    ]
    for pattern, repl in subs:
        text, n = re.subn(pattern, repl, text)
        assert n >= 1, "%s: no line matches %r" % (name, pattern)
    return text.replace("/etc/toll/", etc_dir.rstrip("/") + "/")


class Platform:
    """start(files={"name": bytes}) -> the running example; .port is the
    example's own server."""

    def __init__(self, name, start_nginx, redis_server, upstream, tmp_path):
        self.name = name
        self.start_nginx = start_nginx
        self.redis = redis_server
        self.upstream = upstream
        self.etc = str(tmp_path / "etc-toll")
        os.makedirs(self.etc, exist_ok=True)
        self.ngx = None
        self.port = None

    def write(self, fname, data):
        path = os.path.join(self.etc, fname)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def start(self, workers=2, toll_log=False):
        self.port = free_port()
        text = render(self.name, self.redis.address, self.upstream.port,
                      self.port, self.etc)
        self.ngx = self.start_nginx(toll_http="", http_extra=text,
                                    locations="", workers=workers,
                                    toll_log=toll_log)
        return self


def envelope(r, status):
    """Asserts an answer in toll_error_format envelope; returns "error"."""
    assert r.status == status, (r, r.body)
    assert r.header("Content-Type").startswith("application/json"), r.headers
    doc = r.json()
    assert set(doc) == {"error"}, doc
    return doc["error"]


def cites(ref, line, quote):
    """Marks a test with the line of the reference it checks: ref is the
    file's number ("000" .. "004"), line its 1-based line, quote words
    found on that line (t/conformance/test_citations.py checks them when
    the references are present)."""
    def mark(fn):
        fn.cites = getattr(fn, "cites", []) + [(ref, line, quote)]
        return fn
    return mark


def reference_file(ref):
    if not os.path.isdir(REFERENCE):
        return None
    for f in os.listdir(REFERENCE):
        if f.startswith(ref + "_"):
            return os.path.join(REFERENCE, f)
    return None


def publish_jwks(redis_server, name, keys):
    """Publishes a key set under name as toll-settle does after a good
    fetch (settle/toll_settle_jwks.c; its own path is t/test_jwks.py's):
    keys is [(private RSA key, kid)]."""
    from jwt.algorithms import RSAAlgorithm
    jwks = []
    for key, kid in keys:
        d = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        d.update({"kid": kid, "alg": "RS256", "use": "sig"})
        jwks.append(d)
    doc = json.dumps({"keys": jwks}, separators=(",", ":"))
    rc = redis_server.client
    name_key = "toll:jwks:{%s}" % name
    pipe = rc.pipeline(transaction=True)
    pipe.hset(name_key, mapping={"keys": doc,
                                 "fetched": int(time.time() * 1000)})
    pipe.hincrby(name_key, "gen", 1)
    pipe.execute()
