"""Key records for tests.

make_key() goes through tollctl, as an operator would, so that the CLI
and the module are tested to agree on the record format.  raw_key()
writes the hash itself (HSET), for records tollctl would never write:
past expiry, odd fields, chosen ids.
"""

import base64
import hashlib
import json
import os
import secrets
import subprocess
import time

import redis as redis_py
from redis.cluster import RedisCluster


KEY_PREFIX = "toll:key:{%s}"
KEY_INDEX = "toll:keys"


def build_dir():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("TOLL_BUILD") or os.path.join(
        os.path.dirname(here), "build")


def tollctl_path():
    return os.path.join(build_dir(), "tollctl")


def gen_key_id():
    return "tk_" + secrets.token_hex(8)


def gen_secret(nbytes=32):
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).rstrip(
        b"=").decode()


def sha256_hex(secret):
    if isinstance(secret, str):
        secret = secret.encode()
    return hashlib.sha256(secret).hexdigest()


def redis_name(key_id):
    return KEY_PREFIX % key_id


class Key:
    def __init__(self, key_id, secret, fields):
        self.key_id = key_id
        self.secret = secret
        self.fields = dict(fields)

    @property
    def token(self):
        return "%s:%s" % (self.key_id, self.secret)

    @property
    def hash_hex(self):
        return sha256_hex(self.secret)

    @property
    def owner(self):
        return self.fields.get("owner")

    @property
    def plan(self):
        return self.fields.get("plan")

    def bearer(self):
        return ("Authorization", "Bearer " + self.token)

    def x_api_key(self):
        return ("X-API-Key", self.token)

    def write(self, client):
        """(Re)writes the record, e.g. into a restarted, empty Redis."""
        write_record(client, self.key_id, self.fields)

    def __repr__(self):
        return "<Key %s owner=%s>" % (self.key_id, self.owner)


def pipeline(client):
    """A MULTI pipeline on one Redis; on a Redis Cluster client a plain
    one (redis-py has no cross-slot MULTI there, and the record and the
    index live in two slots)."""
    if isinstance(client, redis_py.Redis):
        return client.pipeline(transaction=True)
    return client.pipeline()


def write_record(client, key_id, fields, index=True):
    name = redis_name(key_id)
    pipe = pipeline(client)
    pipe.delete(name)
    pipe.hset(name, mapping={k: str(v) for k, v in fields.items()})
    if index:
        pipe.sadd(KEY_INDEX, key_id)
    pipe.execute()


def raw_key(redis, key_id=None, secret=None, owner="acme", plan=None,
            role="buyer", status="active", expires_at=0, rate_limit=None,
            extra=None, index=True):
    """Writes a key record directly with HSET and returns the Key.
    `redis` is a RedisServer (or a redis.Redis client)."""
    # redis.Redis has a method named client: test the type, not the name
    client = (redis if isinstance(redis, (redis_py.Redis, RedisCluster))
              else redis.client)
    key_id = key_id or gen_key_id()
    secret = secret or gen_secret()
    fields = {
        "status": status,
        "secret_sha256": sha256_hex(secret),
        "owner": owner,
        "role": role,
        "expires_at": int(expires_at),
        "created_at": int(time.time()),
    }
    if plan is not None:
        fields["plan"] = plan
    if rate_limit is not None:
        fields["rate_limit"] = int(rate_limit)
    if extra:
        fields.update(extra)
    write_record(client, key_id, fields, index=index)
    return Key(key_id, secret, fields)


def tollctl(redis, *args, check=True, redis_spec=None):
    """Runs tollctl against `redis` (its address, or redis_spec: any store
    text --redis takes, e.g. a RedisCluster's .spec); returns the
    CompletedProcess."""
    path = tollctl_path()
    if not os.access(path, os.X_OK):
        raise RuntimeError("%s is not built (make ctl)" % path)
    spec = redis_spec or redis.address
    cmd = [path, "--redis", spec, "--json"] + [str(a) for a in args]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (
            " ".join(cmd), r.returncode, r.stderr.decode(errors="replace")))
    return r


def make_key(redis, owner="acme", plan=None, role="buyer", status="active",
             expires_at=0, redis_spec=None):
    """Creates a key with `tollctl key create` and returns the Key (with
    the record as tollctl wrote it, so it can be rewritten later)."""
    args = ["key", "create", "--owner", owner, "--role", role]
    if plan is not None:
        args += ["--plan", plan]
    if expires_at:
        # tollctl takes a lifetime; a past expiry is raw_key()'s job
        expires_in = int(expires_at) - int(time.time())
        if expires_in < 1:
            raise ValueError("tollctl cannot create an expired key; "
                             "use raw_key(expires_at=...)")
        args += ["--expires-in", str(expires_in)]
    r = tollctl(redis, *args, redis_spec=redis_spec)
    doc = json.loads(r.stdout)
    key_id, secret = doc["key_id"], doc["secret"]
    assert doc.get("token", "%s:%s" % (key_id, secret)) == "%s:%s" % (
        key_id, secret), doc
    fields = redis.client.hgetall(redis_name(key_id))
    assert fields, "tollctl created %s but no record is in Redis" % key_id
    key = Key(key_id, secret, fields)
    if status == "revoked":
        revoke_key(redis, key, redis_spec=redis_spec)
    return key


def revoke_key(redis, key, redis_spec=None):
    tollctl(redis, "key", "revoke", key.key_id, redis_spec=redis_spec)
    key.fields["status"] = "revoked"
