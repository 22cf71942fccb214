"""Every script and every transaction of toll touches one hash slot
(issue 18, docs/redis.md "Slots").

A single redis-server is watched with MONITOR while the gate, tollctl
and toll-settle go through every path that runs a script or a MULTI:
key lookups, limits (synced, strict, per buyer, per address), the free
tier, prepaid leases and give-backs, spend caps, units, toll_usage, the
drain (claims, balance journals, cap alerts), and tollctl's keys,
buyers, balances, reconcile and quarantine.  MONITOR shows what a script
runs as lines of client "lua" right after its EVAL or EVALSHA, and a
transaction's commands between its MULTI and its EXEC.  For each script
run and each transaction, every key is checked to be in the slot of the
first one (a script's KEYS[1]), every key a script touches to be one it
declared, and every key toll writes to carry a non-empty hash tag,
except the few global names listed in GLOBAL (each written alone).

Run with -s to see, per script, the key patterns it touched.
"""

import hashlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest
import redis as redis_py

from helpers import client
from helpers.caps import set_cap
from helpers.keys import redis_name
from helpers.meter import meter_http, meter_upstream, proxy_to, \
    upstream_block
from helpers.procs import wait_for
from helpers.settle import Settle, preload_env, tollctl_bin, usage_key, day

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

assert meter_upstream  # a fixture, used by name

# the names of every node's and every buyer's: one key each, never in a
# script or a transaction with another key (asserted below)
GLOBAL = {"toll:keys", "toll:usage:index", "toll:drain:open",
          "toll:drain:quarantine", "toll:balance:index", "toll:cap:gen",
          "toll:settle:ledger"}

# names a script makes at run time, where its caller cannot know them
# (the days a buyer has usage of; a month that starts on the anchor
# day): allowed undeclared only in the hash tag of the script's KEYS[1]
DERIVED = {
    "cap": {"toll:cap:{S}:m<day>"},
    "usage": {"toll:usage:{S}:<day>", "toll:usage:{S}:<day>:drained",
              "toll:cap:{S}:m<day>"},
}

WRITES = {"SET", "HSET", "HSETNX", "HMSET", "HDEL", "HINCRBY", "INCR",
          "INCRBY", "DECR", "DECRBY", "SADD", "SREM", "ZADD", "ZREM",
          "ZREMRANGEBYSCORE", "DEL", "UNLINK", "EXPIRE", "PEXPIRE",
          "EXPIREAT", "PEXPIREAT", "RENAME", "RENAMENX", "APPEND"}


# ------------------------------------------------------------- slots

def crc16(data):
    """CRC16-XMODEM (poly 0x1021, init 0), as Redis Cluster hashes."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def hash_tag(key):
    """The bytes Redis Cluster hashes: between the first '{' and the
    first '}' after it, when that is not empty; else the whole key."""
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            return key[s + 1:e]
    return None


def key_slot(key):
    if isinstance(key, str):
        key = key.encode()
    tag = hash_tag(key)
    return crc16(tag if tag is not None else key) % 16384


def test_slot_function_known_values():
    assert key_slot("foo") == 12182
    assert key_slot("123456789") == 12739
    assert key_slot("{user1000}.following") == key_slot("user1000")
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}".encode())
    assert hash_tag(b"foo{}{bar}") is None
    assert hash_tag(b"foo{{bar}}zap") == b"{bar"
    assert hash_tag(b"foo{bar}{zap}") == b"bar"
    assert hash_tag(b"toll:usage:{}x}:20260101") is None


# ----------------------------------------------------------- MONITOR

_ESC = {"n": b"\n", "r": b"\r", "t": b"\t", "a": b"\a", "b": b"\b",
        "\\": b"\\", '"': b'"'}


def parse_monitor_line(line):
    """'+1.2 [0 127.0.0.1:5] "A" "b"' -> ("127.0.0.1:5", [b"A", b"b"]);
    the arguments unescaped as sdscatrepr wrote them."""
    m = re.match(r'^\+?[0-9.]+ \[\d+ ([^\]]*)\] (.*)$', line)
    if not m:
        return None
    who, rest = m.group(1), m.group(2)
    args, i = [], 0
    while i < len(rest):
        if rest[i] == " ":
            i += 1
            continue
        assert rest[i] == '"', line
        i += 1
        out = bytearray()
        while rest[i] != '"':
            c = rest[i]
            if c == "\\":
                n = rest[i + 1]
                if n == "x":
                    out.append(int(rest[i + 2:i + 4], 16))
                    i += 4
                    continue
                out += _ESC[n]
                i += 2
                continue
            out += c.encode("latin-1")
            i += 1
        args.append(bytes(out))
        i += 1
    return who, args


class Monitor:
    """MONITOR on a raw socket: every line, as Redis wrote it."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.lines = []
        self.buf = b""
        self.done = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        wait_for(lambda: self.lines, 5, what="MONITOR did not answer OK")

    def _read(self):
        while not self.done:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            self.buf += data
            while b"\r\n" in self.buf:
                line, self.buf = self.buf.split(b"\r\n", 1)
                self.lines.append(line.decode("latin-1"))

    def close(self):
        self.done = True
        self.sock.close()


def script_names():
    """SHA1 -> lua/NAME.lua as the module and the programs send it."""
    spec = importlib.util.spec_from_file_location(
        "embed_lua", os.path.join(ROOT, "tools", "embed_lua.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = {}
    for f in os.listdir(os.path.join(ROOT, "lua")):
        if f.endswith(".lua"):
            text = mod.text_of(os.path.join(ROOT, "lua", f))
            out[hashlib.sha1(text.encode()).hexdigest()] = f[:-4]
    return out


class Group:
    def __init__(self, kind, name, declared):
        self.kind = kind            # "script" | "multi"
        self.name = name
        self.declared = declared    # a script's KEYS
        self.cmds = []              # (args, keys)


def groups_of(lines):
    """Script runs (EVAL/EVALSHA and the lua lines after it) and
    transactions (a client's MULTI ... EXEC), in order."""
    names = script_names()
    out, script, multi = [], None, {}
    for line in lines:
        p = parse_monitor_line(line)
        if p is None:
            continue
        who, args = p
        cmd = args[0].upper().decode()
        if who == "lua":
            assert script is not None, line
            script.cmds.append(args)
            continue
        script = None
        if cmd in ("EVAL", "EVALSHA"):
            n = int(args[2])
            if cmd == "EVAL":
                sha = hashlib.sha1(args[1]).hexdigest()
            else:
                sha = args[1].decode()
            script = Group("script", names.get(sha, "?" + sha[:8]),
                           list(args[3:3 + n]))
            out.append(script)
            if who in multi:
                multi[who].cmds.append(args)
            continue
        if cmd == "MULTI":
            multi[who] = Group("multi", None, [])
            out.append(multi[who])
        elif cmd in ("EXEC", "DISCARD"):
            multi.pop(who, None)
        elif who in multi:
            multi[who].cmds.append(args)
    return out


class Keys:
    """The keys of a command, from Redis itself (COMMAND GETKEYS)."""

    def __init__(self, port):
        self.rc = redis_py.Redis(host="127.0.0.1", port=port)
        # redis-py reads any COMMAND reply as COMMAND's own table
        self.rc.set_response_callback("COMMAND", lambda r, **kw: r)
        self.cache = {}

    def of(self, args):
        t = tuple(args)
        if t not in self.cache:
            try:
                self.cache[t] = list(self.rc.execute_command(
                    "COMMAND", "GETKEYS", *args))
            except redis_py.ResponseError:
                self.cache[t] = []
        return self.cache[t]


def pattern(key):
    """A key with its subject and its days taken out."""
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    s = key.find("{")
    e = key.rfind("}")
    if s >= 0 and e > s:
        key = key[:s] + "{S}" + key[e + 1:]
    key = re.sub(r"(?<=[:dm])\d{8}", "<day>", key)
    key = re.sub(r"[0-9a-f]{32}", "<id>", key)
    return key


def audit(port, lines):
    """Problems found, and per script the key patterns it touched."""
    keys = Keys(port)
    problems, touched, multis, derived = [], {}, {}, {}
    written = set()
    for line in lines:
        p = parse_monitor_line(line)
        if p and p[1][0].upper().decode() in WRITES:
            for k in keys.of(p[1]):
                written.add(k)
    for g in groups_of(lines):
        all_keys = []
        for args in g.cmds:
            all_keys += keys.of(args)
        if g.kind == "script":
            first = g.declared[0] if g.declared else None
            touched.setdefault(g.name, set()).update(
                pattern(k) for k in all_keys)
            for k in all_keys:
                if k in g.declared:
                    continue
                if (pattern(k) in DERIVED.get(g.name, ())
                        and hash_tag(k) == hash_tag(first)):
                    derived.setdefault(g.name, set()).add(pattern(k))
                    continue
                problems.append("%s touches %r, not in its KEYS"
                                % (g.name, k))
        else:
            first = all_keys[0] if all_keys else None
            what = " ".join(sorted({a[0].upper().decode()
                                    for a in g.cmds}))
            multis.setdefault(what, set()).update(
                pattern(k) for k in all_keys)
        if first is None:
            continue
        base = key_slot(first)
        for k in set(all_keys) | set(g.declared):
            if key_slot(k) != base:
                problems.append("%s: %r (slot %d) is not in the slot of "
                                "%r (%d)" % (g.name or "MULTI " + what, k,
                                             key_slot(k), first, base))
            if k.decode("latin-1") in GLOBAL and len(set(all_keys)) > 1:
                problems.append("%s: global %r with other keys"
                                % (g.name or "MULTI " + what, k))
    for k in sorted(written):
        kb = k if isinstance(k, bytes) else k.encode("latin-1")
        name = kb.decode("latin-1")
        if name not in GLOBAL and hash_tag(kb) is None:
            problems.append("written without a hash tag: %r" % kb)
    return sorted(set(problems)), touched, multis, derived


# ------------------------------------------------------------ driving

PROXY_M = proxy_to("meterapi")

PLANS = """
    toll_limit_sync 100ms;
    toll_plan synced rate=600r/m;
    toll_plan strict rate=600r/m strict;
    toll_plan byip rate=600r/m;
    toll_buyer_plan on;
"""

LOCATIONS = """
        location = /usage/me {
            toll on;
            toll_usage;
        }
        location /paid/ {
            toll on;
            toll_service paid provider=acme price=0.05 free_calls=2;
            %(proxy)s
        }
        location /buyer/ {
            toll on;
            toll_limit_key buyer;
            toll_limit_ip byip;
            toll_service bpaid provider=acme price=0.01;
            %(proxy)s
        }
        location /pre/ {
            toll on;
            toll_prepaid on;
            toll_service pre provider=acme price=0.01 unit_price=0.001
                max_units=100 units_header=X-Units;
            %(proxy)s
        }
""" % {"proxy": PROXY_M}


def ctl(redis_server, *args, ledger=None, check=True, stdin=None):
    cmd = [tollctl_bin(), "--redis", redis_server.address]
    if ledger:
        cmd += ["--ledger", ledger]
    p = subprocess.run(cmd + list(args), env=preload_env(),
                       capture_output=True, text=True, timeout=60,
                       input=stdin)
    if check:
        assert p.returncode == 0, (args, p.stderr)
    return p


def drive(start_nginx, meter_upstream, redis_server, tmp_path):
    """Every path that runs a script or a transaction, once or more."""
    rc = redis_server.client
    ledger = str(tmp_path / "ledger.db")
    set_cap(rc, "~others", daily=1000000)
    keys = {}
    for plan in ("synced", "strict"):
        p = ctl(redis_server, "--json", "key", "create", "--owner",
                "slots-" + plan, "--plan", plan, "--spend-cap-daily", "5",
                "--spend-cap-monthly", "50")
        keys[plan] = json.loads(p.stdout)
    p = ctl(redis_server, "--json", "key", "create", "--owner", "slots-b")
    keys["buyer"] = json.loads(p.stdout)
    imp = ctl(redis_server, "key", "import", "--token", "-", "--owner",
              "slots-imp", stdin="sk_live_" + "a" * 40 + "\n")
    ctl(redis_server, "key", "update", keys["buyer"]["key_id"], "--scopes",
        "read,write")
    ctl(redis_server, "buyer", "set-plan", "slots-b", "synced")
    ctl(redis_server, "buyer", "set-cap", "slots-synced", "--daily", "10",
        "--monthly", "100", "--anchor", "3")
    for kind in ("credit", "debit", "refund"):
        amount = "20" if kind == "credit" else "1"
        ctl(redis_server, "balance", kind, "slots-synced", amount, "--ref",
            "slots-" + kind)
    ctl(redis_server, "balance", "credit", "slots-strict", "5", "--ref",
        "s-c")

    ngx = start_nginx(http_extra=meter_http() + PLANS + upstream_block(
        "meterapi", meter_upstream.port, keepalive=16), locations=LOCATIONS)

    def call(k, path):
        return client.request(ngx.port, path=path, headers=[
            ("Authorization", "Bearer %s:%s" % (k["key_id"], k["secret"]))])

    for k in keys.values():
        for path in ("/paid/a", "/paid/b", "/paid/c", "/buyer/x",
                     "/pre/x?units=3", "/pre/y"):
            r = call(k, path)
            assert r.status in (200, 402), (path, r.status, r.body,
                                            rc.info("errorstats"))
        assert call(k, "/usage/me").status == 200
    # a call over the cap (a "full" mark) and leases given back
    ctl(redis_server, "buyer", "set-cap", "slots-strict", "--daily", "0.01")
    time.sleep(1.2)
    call(keys["strict"], "/paid/d")
    call(keys["strict"], "/pre/z")
    wait_for(lambda: rc.scard("toll:usage:index") > 0, 10, what="no usage")
    time.sleep(1.0)

    # the drain: claims, balance journals, cap alerts, a quarantine
    bad = usage_key("slots-bad", day())
    rc.hset(bad, mapping={"svc:calls": "1", "svc:provider": "acme",
                          "svc:amount_micros": "1.5"})
    rc.sadd("toll:usage:index", bad)
    settle = Settle(redis_server, ledger, workdir=str(tmp_path))
    p = settle.once()
    assert p.returncode == 0, p.stderr
    for k in keys.values():
        assert call(k, "/usage/me").status == 200
    ctl(redis_server, "--json", "reconcile", ledger=ledger, check=False)
    ctl(redis_server, "quarantine", "list", ledger=ledger)
    ctl(redis_server, "quarantine", "replay", "--all", ledger=ledger)
    ctl(redis_server, "key", "revoke", keys["synced"]["key_id"])
    ctl(redis_server, "buyer", "clear-plan", "slots-b")
    ctl(redis_server, "buyer", "show", "slots-synced")
    ngx.stop()
    settle.close()
    return imp


def test_every_script_and_transaction_in_one_slot(start_nginx, meter_upstream,
                                                   redis_server, tmp_path):
    mon = Monitor(redis_server.port)
    try:
        drive(start_nginx, meter_upstream, redis_server, tmp_path)
    finally:
        time.sleep(0.3)
        mon.close()
        with open(str(tmp_path / "monitor.log"), "w") as f:
            f.write("\n".join(mon.lines) + "\n")
    problems, touched, multis, derived = audit(redis_server.port,
                                               mon.lines)
    print("\nscripts and the keys they touched:")
    for name in sorted(touched):
        print("  %-16s %s" % (name, ", ".join(sorted(touched[name]))))
    print("names made by scripts at run time (same tag as KEYS[1]):")
    for name in sorted(derived):
        print("  %-16s %s" % (name, ", ".join(sorted(derived[name]))))
    print("transactions and the keys they touched:")
    for what in sorted(multis):
        print("  MULTI %-24s %s" % (what, ", ".join(sorted(multis[what]))))
    # every script toll has ran at least once
    want = {"balance", "cap", "claim", "free", "limit", "meter", "prepaid",
            "quarantine_read", "usage"}
    assert want <= set(touched), sorted(want - set(touched))
    assert problems == [], "\n".join(problems)


# --------------------------------------------- ids that shift the tag

@pytest.mark.parametrize("buyer", ["}", "}acme", "}}", "}{x}"])
def test_tollctl_refuses_a_buyer_that_empties_the_hash_tag(redis_server,
                                                           buyer):
    for args in (["key", "create", "--owner", buyer],
                 ["buyer", "set-cap", buyer, "--daily", "1"],
                 ["buyer", "set-plan", buyer, "synced"],
                 ["balance", "credit", buyer, "1", "--ref", "r"],
                 ["key", "import", "--token", "sk_live_" + "b" * 40,
                  "--owner", buyer]):
        p = ctl(redis_server, *args, check=False)
        assert p.returncode == 65, (args, p.stderr)
        assert "'}'" in p.stderr and "hash tag" in p.stderr, p.stderr
        assert p.stderr.count("\n") == 1, p.stderr
    assert redis_server.client.dbsize() == 0


@pytest.mark.parametrize("buyer", ["a}b", "{a", "a{b}c", "x}"])
def test_tollctl_takes_a_buyer_with_braces_inside(redis_server, buyer):
    """'{' anywhere, or '}' after the first byte, leaves a non-empty tag:
    every key of the buyer still shares one slot."""
    p = ctl(redis_server, "buyer", "set-cap", buyer, "--daily", "1")
    assert p.returncode == 0, p.stderr
    names = [redis_name("x"), "toll:cap:{%s}" % buyer,
             "toll:cap:{%s}:d20260101" % buyer, usage_key(buyer, day()),
             "toll:balance:{%s}:refs" % buyer]
    assert len({key_slot(n) for n in names[1:]}) == 1


# ------------------------------------------------ an interrupted create

class CutProxy:
    """A TCP proxy to Redis that closes both sides as soon as the client
    sends a command holding `cut` (bytes): tollctl stopped at a step."""

    def __init__(self, port, cut):
        self.port_to, self.cut = port, cut
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.port_to))
            threading.Thread(target=self._pipe, args=(c, u, True),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, False),
                             daemon=True).start()

    def _pipe(self, src, dst, check):
        seen = b""
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                seen = (seen + data)[-4096:]
                if check and self.cut in seen:
                    self.cuts += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.lsock.close()


@pytest.mark.parametrize("cut", [b"toll:cap:{", b"toll:cap:gen",
                                 b"toll:key:{"])
def test_interrupted_key_create_leaves_no_usable_key(redis_server,
                                                     start_nginx, cut):
    """tollctl key create writes one slot at a time, the key record last:
    cut at any step, no record exists, nothing the gate would take."""
    rc = redis_server.client
    proxy = CutProxy(redis_server.port, cut)
    try:
        p = subprocess.run([tollctl_bin(), "--redis", "127.0.0.1:%d"
                            % proxy.port, "--json", "key", "create",
                            "--owner", "cut", "--spend-cap-daily", "1"],
                           env=preload_env(), capture_output=True,
                           text=True, timeout=60)
    finally:
        proxy.close()
    assert proxy.cuts == 1, (cut, p.stdout, p.stderr)
    assert p.returncode != 0 and p.stdout == "", (p.stdout, p.stderr)
    assert list(rc.scan_iter("toll:key:*")) == []
    # whatever went before is harmless, and the next create works
    ok = ctl(redis_server, "--json", "key", "create", "--owner", "cut")
    k = json.loads(ok.stdout)
    ngx = start_nginx()
    r = client.request(ngx.port, path="/x", headers=[
        ("Authorization", "Bearer %s:%s" % (k["key_id"], k["secret"]))])
    assert r.status == 200
    listed = ctl(redis_server, "--json", "key", "list")
    assert k["key_id"] in listed.stdout
