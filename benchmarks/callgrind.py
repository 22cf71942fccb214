#!/usr/bin/python3
"""The module's own instructions per request, counted by callgrind.

    benchmarks/callgrind.py [--variant auth|limits|prepaid|jwt|jwt_uncached|
                                       jwt_forged|jwt_forged_ip|plugin|units|
                                       llm_usage|authz|both|all]
                            [--requests N]
                            [--annotate] [--keep] BUILD_DIR
                                                    (make bench-callgrind)

Runs nginx as a single process under valgrind --tool=callgrind, with
collection switched on only inside the module's entry points (the access
handler, the Redis reply callbacks, the rate-limit header filter, the
request cleanup, the limit sync timer).  After a warm-up that puts the key
in the cache, N requests with the cached key go through one keep-alive
connection for each variant, and callgrind dumps its counters after each:

  auth    location "toll on; toll_limit off;": authentication only;
  limits  location "toll on;" with the key on a plan that has a token
          bucket and a sliding window, limits too high to ever refuse,
          so that both algorithms, the rate-limit headers and the sync
          timer run (the whole gate as it is today).
  prepaid the same with "toll_prepaid on" and a balance no run can
          spend: each call also holds its price from the node's lease
          of the balance (a Redis exchange when a lease runs out,
          counted with the requests).
  jwt     location "toll on; toll_jwt on; toll_limit off;": one RS256
          JWT, verified once in the warm-up, then taken from the cache.
  jwt_uncached
          the same location, a new RS256 JWT for every request: each
          one costs the signature check (signed with the openssl CLI).
  jwt_forged
          the same location, a new RS256 JWT for every request with
          well-formed, valid claims and a random signature of the right
          length: what an unauthenticated client flooding forged tokens
          costs (each one refused, 401).
  jwt_forged_ip
          the same tokens to a location with "toll_limit_ip forgers
          unauthenticated" (burst 1, 1 r/d): the address is over its
          limit after the warm-up, so each token is refused (429)
          before its signature is checked.
  plugin  the whole gate as limits, and "toll_plugin noop" (five hooks
          doing nothing: t/plugins/noop.c).
  units   the whole gate as limits on a service priced per unit of the
          upstream's "X-Units: 42" (units_header).
  authz   the whole gate as limits, with "toll_require" asking two scopes
          and one of two roles of the key, and the envelope error format.
  llm_usage
          the whole gate on a service priced per token, and "toll_plugin
          llm_usage" reading usage.total_tokens from a 64 KiB
          text/event-stream (a static file of the same nginx).

Instructions are counted, not timed: the figure is the same on a busy
machine, so it can be compared across commits.  The limit sync timer's
work is per tick (toll_limit_sync, 100 ms), not per request: it is taken
out of the per-request figure and printed on a line of its own.

DESIGN's promise: <= 5,000 instructions per request on the cached path.

Stdlib only; needs valgrind (callgrind_control) and redis-server.
"""

import argparse
import base64
import collections
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


NGINX = "/usr/sbin/nginx"
REDIS_SERVER = "/usr/bin/redis-server"
VALGRIND = "/usr/bin/valgrind"
CALLGRIND_CONTROL = "/usr/bin/callgrind_control"
CALLGRIND_ANNOTATE = "/usr/bin/callgrind_annotate"

# entry points from nginx into the module on a request's path; callees
# are counted with them
REQUEST_ENTRY_POINTS = (
    "ngx_http_toll_access_handler",
    "ngx_http_toll_auth_on_reply",
    "ngx_http_toll_limit_strict_reply",
    "ngx_http_toll_header_filter",
    "ngx_http_toll_meter_body_filter",
    "ngx_http_toll_quota_claim_reply",
    "ngx_http_toll_prepaid_reply",
    "ngx_http_toll_log_handler",
    "ngx_http_toll_cleanup",
)

# per toll_limit_sync tick, whatever the request rate
SYNC_ENTRY_POINTS = (
    "ngx_http_toll_limit_sync_handler",
    "ngx_http_toll_limit_sync_reply",
    "ngx_http_toll_meter_timer",
    "ngx_http_toll_meter_reply",
    "ngx_http_toll_meter_index_reply",
)

# A header filter ends by calling the next one, and callgrind counts the
# rest of nginx's filter chain (building and writing the status line and
# headers) as the filter's callee.  That is nginx's work, not the
# module's: calls from these to functions without a symbol (nginx's
# static functions: the next filter) are taken out.  Calls to exported
# helpers (ngx_sprintf, ngx_list_push, ...) stay counted.  The plugins'
# body filter likewise, and the meter's: the chain after it writes the
# body.
FILTERS = (
    "ngx_http_toll_header_filter",
    "ngx_http_toll_meter_body_filter",
    "ngx_http_toll_plugin_header_filter",
    "ngx_http_toll_plugin_body_filter",
)

# the plugins' entry points (a config with a toll_plugin line only)
PLUGIN_ENTRY_POINTS = (
    "ngx_http_toll_plugin_access",
    "ngx_http_toll_plugin_header_filter",
    "ngx_http_toll_plugin_body_filter",
    "ngx_http_toll_plugin_log_handler",
    "ngx_http_toll_plugin_cleanup",
)

# With plugins, the plugins' header filter is the top of the chain and
# calls toll's: callgrind's --toggle-collect toggles, so a nested entry
# point would switch collection off inside itself.  It is not toggled
# then, and counts as a callee of the plugins' filter (split out below).
PLUGIN_NESTED = (
    "ngx_http_toll_header_filter",
    "ngx_http_toll_meter_body_filter",
)

WARMUP = 20

# the event stream of llm_usage: its size, the tokens of its last event,
# and what the units and llm_usage services charge per unit
SSE_BYTES = 65536
SSE_TOKENS = 4242
UNITS = 42
UNIT_PRICE = "price=0.001 unit_price=0.000001 max_units=100000"

# both algorithms (a bucket, a window), never refusing in a run: the
# bucket refills at 1.67 M/s and holds 1 M, the day allows 1e9
PLAN = "toll_plan bench rate=100000000r/m burst=1000000 rate=1000000000r/d;"

# the variant's location; the same key (on plan "bench") for both
VARIANTS = collections.OrderedDict([
    ("auth", "/toll/"),
    ("limits", "/limits/"),
    ("prepaid", "/prepaid/"),
    ("jwt", "/jwt/"),
    ("jwt_uncached", "/jwt/"),
    ("jwt_forged", "/jwt/"),
    ("jwt_forged_ip", "/jwtip/"),
    ("plugin", "/plugin/"),
    ("units", "/units/"),
    ("authz", "/authz/"),
    ("llm_usage", "/llm/"),
])
PLUGIN_VARIANTS = ("plugin", "llm_usage")

# what each variant's measured requests are answered (200 if not here)
STATUS = {"jwt_forged": 401, "jwt_forged_ip": 429}
# ... and its warm-up requests: the address goes over its limit
WARMUP_STATUS = {"jwt_forged_ip": (401, 429)}
# whether its answers carry the rate-limit headers (None: not checked)
LIMITED = {"limits": True, "prepaid": True, "jwt_forged_ip": None,
           "plugin": True, "units": True, "authz": True,
           "llm_usage": True}
# a response header each answer must carry, and the body's length
HEADER = {"units": ("X-Toll-Units", str(UNITS))}
LENGTH = {"llm_usage": SSE_BYTES}

OPENSSL = "/usr/bin/openssl"

CONF = """\
load_module {module};
{user}
master_process off;
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;

    toll_redis 127.0.0.1:{redis_port} timeout=5s;
    toll_zone 1m;
    {plan}
    toll_plan forgers rate=1r/d burst=1;
    toll_jwt_key {prefix}/jwt.pub kid=bench;
    {plugin_load}

    upstream backend {{ server 127.0.0.1:{up_port}; keepalive 4; }}

    server {{
        listen 127.0.0.1:{port};
        location /toll/ {{
            toll on;
            toll_limit off;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /jwt/ {{
            toll on;
            toll_jwt on;
            toll_limit off;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /jwtip/ {{
            toll on;
            toll_jwt on;
            toll_limit_ip forgers unauthenticated;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /limits/ {{
            toll on;
            toll_service bench provider=bench price=0.001;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /prepaid/ {{
            toll on;
            toll_prepaid on;
            toll_service bench provider=bench price=0.001;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /units/ {{
            toll on;
            toll_service bench-units provider=bench {unit_price}
                units_header=X-Units;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /authz/ {{
            toll on;
            toll_require scope=read scope=write role=admin role=buyer;
            toll_error_format envelope;
            toll_service bench provider=bench price=0.001;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        {plugin_locations}
    }}
    server {{
        listen 127.0.0.1:{up_port};
        location / {{ return 200 "ok"; }}
        location /units/ {{
            add_header X-Units {units} always;
            return 200 "ok";
        }}
        location /llm/ {{
            root {prefix};
            default_type text/event-stream;
            try_files /sse.txt =404;
        }}
    }}
}}
"""


# only when a plugin variant runs: a toll_plugin line anywhere puts the
# plugins' handlers and filters on every request of the process
PLUGIN_LOAD = """\
toll_plugin_load noop {prefix}/noop.so;
    toll_plugin_load llm_usage {prefix}/toll_llm_usage.so;
"""

PLUGIN_LOCATIONS = """\
location /plugin/ {{
            toll on;
            toll_service bench provider=bench price=0.001;
            toll_plugin noop;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /llm/ {{
            toll on;
            toll_service bench-tokens provider=bench {unit_price};
            toll_plugin llm_usage;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
"""


def sse_body(size, total):
    """A streamed completion of exactly size bytes: content deltas with
    a null usage, the usage in the last event, then [DONE] (what
    llm_usage reads); the first delta is padded to the size."""
    def event(o, pad=0):
        if pad:
            o["choices"][0]["delta"]["content"] += "x" * pad
        return "data: %s\n\n" % json.dumps(o, separators=(",", ":"))

    def delta(pad=0):
        return event({"choices": [{"delta": {"content": "x" * 200}}],
                      "usage": None}, pad)

    tail = event({"choices": [], "usage": {"prompt_tokens": 3,
                  "completion_tokens": total - 3, "total_tokens": total}})
    tail += "data: [DONE]\n\n"
    n = (size - len(tail)) // len(delta())
    body = (delta(size - len(tail) - n * len(delta()))
            + delta() * (n - 1) + tail)
    assert len(body) == size
    return body


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("callgrind: %s exited early" % what)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("callgrind: %s did not start" % what)


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_inputs(n):
    """The signed parts ("header.payload") of n distinct RS256 tokens of
    the bench key, valid for an hour from now."""
    now = int(time.time())
    header = b64u(json.dumps({"alg": "RS256", "kid": "bench"}).encode())
    return [header + "." + b64u(json.dumps({"sub": "bench", "iat": now,
                                            "exp": now + 3600,
                                            "jti": i}).encode())
            for i in range(n)]


def jwt_tokens(prefix, n):
    """n distinct RS256 tokens for the key in prefix/jwt.key, signed with
    the openssl CLI (stdlib only here)."""
    tokens = []
    for si in signing_inputs(n):
        sig = subprocess.run([OPENSSL, "dgst", "-sha256", "-sign",
                              os.path.join(prefix, "jwt.key")],
                             input=si.encode(), check=True,
                             capture_output=True).stdout
        tokens.append(si + "." + b64u(sig))
    return tokens


def forged_tokens(n):
    """n distinct RS256 tokens with valid claims and a random signature
    of the length the 2048-bit key makes: no private key needed.  The
    first byte is zero, so that the signature is below the modulus and
    every one costs the whole RSA operation, as a forger would make it
    (OpenSSL refuses one at or above the modulus before the
    exponentiation, and how many those are would depend on the key)."""
    return [si + "." + b64u(b"\0" + os.urandom(255))
            for si in signing_inputs(n)]


def run_requests(port, path, n, token, limited, status=200, header=None,
                 length=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    tokens = token if isinstance(token, list) else [token] * n
    for i in range(n):
        headers = {"Authorization": "Bearer " + tokens[i]}
        conn.request("GET", path + "x", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if header and resp.getheader(header[0]) != header[1]:
            sys.exit("callgrind: %s answered %s: %r, not %r" %
                     (path, header[0], resp.getheader(header[0]), header[1]))
        if length is not None and len(body) != length:
            sys.exit("callgrind: %s answered %d bytes, not %d"
                     % (path, len(body), length))
        ok = status if isinstance(status, tuple) else (status,)
        if resp.status not in ok:
            sys.exit("callgrind: %s answered %d, not %s: the gate is not "
                     "deciding as the variant expects"
                     % (path, resp.status, " or ".join(map(str, ok))))
        # proof that the variant is what it claims: limits computed (and
        # passed) on /limits/, not at all on /toll/
        if (limited is not None
                and limited != (resp.getheader("RateLimit") is not None)):
            sys.exit("callgrind: %s %s a RateLimit header: the limits are "
                     "%s" % (path, "lacks" if limited else "has",
                             "off" if limited else "on"))
    conn.close()


def parse_callgrind(path):
    """Self cost of each function and inclusive cost (and count) of each
    call, from a callgrind output file (first event: Ir)."""
    names = {}
    self_ir = collections.Counter()
    call_ir = collections.Counter()
    call_n = collections.Counter()
    npos = 1
    totals = None
    fn = cfn = None
    in_call = False

    def name(spec):
        # "(12) name" defines id 12, "(12)" refers to it
        m = re.match(r"\((\d+)\)(?: (.*))?$", spec)
        if not m:
            return spec
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), spec)

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                fields = line.split()
                ir = int(fields[npos]) if len(fields) > npos else 0
                if in_call:
                    call_ir[(fn, cfn)] += ir
                    in_call = False
                else:
                    self_ir[fn] += ir
            elif line.startswith("fn="):
                fn = name(line[3:])
            elif line.startswith("cfn="):
                cfn = name(line[4:])
            elif line.startswith("calls="):
                call_n[(fn, cfn)] += int(line[6:].split()[0])
                in_call = True
            elif line.startswith("positions:"):
                npos = len(line.split()) - 1
            elif line.startswith(("totals:", "summary:")):
                totals = int(line.split()[1])

    return self_ir, call_ir, call_n, totals


def inclusive(fn, self_ir, call_ir):
    return self_ir[fn] + sum(ir for (caller, _), ir in call_ir.items()
                             if caller == fn)


def dump(pid, out, seen):
    """Ask callgrind to write (and zero) its counters; the new file."""
    subprocess.run([CALLGRIND_CONTROL, "--dump", str(pid)],
                   check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = set(glob.glob(out + ".*")) - seen
        if new:
            path = new.pop()
            with open(path) as f:
                done = re.search(r"^totals: ", f.read(), re.M)
            if done:
                seen.add(path)
                return path
        time.sleep(0.1)
    sys.exit("callgrind: no dump file appeared for %s" % out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build")
    ap.add_argument("--variant", default="both",
                    help="auth: authentication only; limits: the whole "
                         "gate, authentication and a limit plan; jwt, "
                         "jwt_uncached: a JWT from the cache, a new JWT "
                         "each request; jwt_forged: a new JWT with a "
                         "bad signature each request; jwt_forged_ip: "
                         "the same from an address over its "
                         "toll_limit_ip limit; plugin: limits and a no-op "
                         "plugin; units: limits priced per unit of the "
                         "upstream's header; llm_usage: the whole gate and "
                         "llm_usage on a 64 KiB event stream; both "
                         "(default): auth and limits; all: every variant "
                         "but plugin and llm_usage; or a comma-separated "
                         "list of variants")
    ap.add_argument("--requests", type=int, default=2000,
                    help="requests per variant (default 2000)")
    ap.add_argument("--annotate", action="store_true",
                    help="also print the functions the instructions went "
                         "to, per variant")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary prefix (config, error log, "
                         "callgrind files) on exit")
    args = ap.parse_args()
    if args.requests < 1:
        ap.error("--requests must be positive")
    if args.variant == "both":
        variants = ["auth", "limits"]
    elif args.variant == "all":
        # loading plugins adds their checks to every other variant's
        # figure: the plugin variants run only when named
        variants = [v for v in VARIANTS if v not in PLUGIN_VARIANTS]
    else:
        variants = args.variant.split(",")
        for v in variants:
            if v not in VARIANTS:
                ap.error("--variant: %s, both, all or a comma-separated "
                         "list, not %r" % (", ".join(VARIANTS), v))

    build = os.path.abspath(args.build)
    module = os.path.join(build, "ngx_http_toll_module.so")
    tollctl = os.path.join(build, "tollctl")
    plugins = any(v in PLUGIN_VARIANTS for v in variants)
    plugin_sos = [os.path.join(build, "plugins", "test", "noop.so"),
                  os.path.join(build, "plugins", "toll_llm_usage.so")]
    for path in ([module, tollctl, VALGRIND, CALLGRIND_CONTROL]
                 + (plugin_sos if plugins else [])):
        if not os.path.exists(path):
            sys.exit("callgrind: %s not found (make, apt-get install "
                     "valgrind)" % path)

    prefix = tempfile.mkdtemp(prefix="toll-callgrind-")
    os.makedirs(os.path.join(prefix, "tmp"))
    # a private copy: a rebuild during the run cannot pull it from under
    # nginx
    shutil.copy(module, os.path.join(prefix, "ngx_http_toll_module.so"))
    module = os.path.join(prefix, "ngx_http_toll_module.so")
    if plugins:
        for so in plugin_sos:
            shutil.copy(so, prefix)
    with open(os.path.join(prefix, "sse.txt"), "w") as f:
        f.write(sse_body(SSE_BYTES, SSE_TOKENS))
    # what collection is toggled on, and what is counted per request
    entry_points = REQUEST_ENTRY_POINTS
    toggles = REQUEST_ENTRY_POINTS + SYNC_ENTRY_POINTS
    if plugins:
        entry_points += PLUGIN_ENTRY_POINTS
        toggles = tuple(f for f in toggles + PLUGIN_ENTRY_POINTS
                        if f not in PLUGIN_NESTED)
    procs = []

    try:
        redis_port = free_port()
        redis = subprocess.Popen(
            [REDIS_SERVER, "--port", str(redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, cwd=prefix)
        procs.append(redis)
        wait_port(redis_port, redis, "redis-server")

        key = json.loads(subprocess.run(
            [tollctl, "--redis", "127.0.0.1:%d" % redis_port, "key",
             "create", "--owner", "bench", "--plan", "bench", "--scopes",
             "read,write"],
            check=True, capture_output=True, text=True).stdout)

        subprocess.run([OPENSSL, "genpkey", "-algorithm", "RSA",
                        "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                        os.path.join(prefix, "jwt.key")],
                       check=True, capture_output=True)
        subprocess.run([OPENSSL, "pkey", "-in",
                        os.path.join(prefix, "jwt.key"), "-pubout", "-out",
                        os.path.join(prefix, "jwt.pub")],
                       check=True, capture_output=True)
        if "prepaid" in variants:
            # a balance no run can spend: 1,000,000 at 0.001 a call
            subprocess.run(
                [tollctl, "--redis", "127.0.0.1:%d" % redis_port, "balance",
                 "credit", "bench", "1000000", "--ref", "bench"],
                check=True, capture_output=True, text=True)

        tokens = {"auth": key["token"], "limits": key["token"],
                  "prepaid": key["token"], "plugin": key["token"],
                  "units": key["token"], "authz": key["token"],
                  "llm_usage": key["token"],
                  "jwt": jwt_tokens(prefix, 1)[0]}
        if "jwt_uncached" in variants:
            tokens["jwt_uncached"] = jwt_tokens(prefix,
                                                WARMUP + args.requests)
        for v in ("jwt_forged", "jwt_forged_ip"):
            if v in variants:
                tokens[v] = forged_tokens(WARMUP + args.requests)

        port, up_port = free_port(), free_port()
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(module=module, prefix=prefix, port=port,
                                up_port=up_port, redis_port=redis_port,
                                plan=PLAN, unit_price=UNIT_PRICE,
                                units=UNITS,
                                plugin_load=PLUGIN_LOAD.format(prefix=prefix)
                                if plugins else "",
                                plugin_locations=PLUGIN_LOCATIONS.format(
                                    unit_price=UNIT_PRICE)
                                if plugins else "",
                                user="user root;" if os.geteuid() == 0
                                else ""))

        out = os.path.join(prefix, "callgrind.out")
        argv = [VALGRIND, "--tool=callgrind", "--callgrind-out-file=" + out]
        argv += ["--toggle-collect=" + f for f in toggles]
        argv += [NGINX, "-p", prefix, "-c", conf, "-e",
                 os.path.join(prefix, "error.log")]
        ngx = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        procs.append(ngx)
        wait_port(port, ngx, "nginx under valgrind")

        # fills the key cache (one Redis lookup) and the limit state
        for v in variants:
            t = tokens[v]
            run_requests(port, VARIANTS[v], WARMUP,
                         t[:WARMUP] if isinstance(t, list) else t,
                         LIMITED.get(v, False),
                         WARMUP_STATUS.get(v, STATUS.get(v, 200)),
                         HEADER.get(v), LENGTH.get(v))
        seen = set()
        dump(ngx.pid, out, seen)                 # the warm-up, not counted

        results = []
        for v in variants:
            t0 = time.monotonic()
            t = tokens[v]
            run_requests(port, VARIANTS[v], args.requests,
                         t[WARMUP:] if isinstance(t, list) else t,
                         LIMITED.get(v, False), STATUS.get(v, 200),
                         HEADER.get(v), LENGTH.get(v))
            path = dump(ngx.pid, out, seen)
            results.append((v, time.monotonic() - t0, path))

        ngx.send_signal(signal.SIGQUIT)
        ngx.wait(timeout=120)

        with open(os.path.join(prefix, "error.log")) as f:
            alerts = [l for l in f
                      if re.search(r"\[(alert|crit|emerg)\]", l)]
        if alerts:
            sys.stderr.write("".join(alerts))
            sys.exit("callgrind: nginx logged errors (above)")

        result = []
        for v, secs, path in results:
            self_ir, call_ir, call_n, totals = parse_callgrind(path)
            if totals is None:
                sys.exit("callgrind: no totals in %s" % path)

            # nginx's filter chain after ours
            chain = sum(ir for (caller, callee), ir in call_ir.items()
                        if caller in FILTERS and callee.startswith("0x"))
            # each entry point's own: without nginx's chain after a
            # filter, and without an entry point it calls (the plugins'
            # header filter calls toll's), which has its own part
            parts = collections.OrderedDict(
                (f, inclusive(f, self_ir, call_ir)
                    - sum(ir for (caller, callee), ir in call_ir.items()
                          if caller == f
                          and (callee in entry_points
                               or (f in FILTERS
                                   and callee.startswith("0x")))))
                for f in entry_points)
            sync = sum(inclusive(f, self_ir, call_ir)
                       for f in SYNC_ENTRY_POINTS)
            ticks = sum(n for (_, callee), n in call_n.items()
                        if callee == SYNC_ENTRY_POINTS[0])
            module = totals - sync - chain
            per_request = module / args.requests

            # everything collected is one of the entry points (with its
            # callees), else an entry point is missing from the lists
            rest = module - sum(parts.values())
            if abs(rest) > totals / 100:
                sys.exit("callgrind: %d instructions of %d in %s are not "
                         "under a known entry point" % (rest, totals, path))

            if args.annotate:
                print("--- %s: where the instructions went (nginx's filter "
                      "chain after the module's header filter included)"
                      % v)
                print(subprocess.run(
                    [CALLGRIND_ANNOTATE, "--inclusive=no", "--auto=no",
                     "--threshold=100", path],
                    capture_output=True, text=True).stdout)

            what = {"auth": "auth only, cached API key",
                    "limits": "auth + limits (bucket + window), cached "
                              "API key",
                    "prepaid": "the whole gate with toll_prepaid on: "
                               "limits, a hold from the node's lease, the "
                               "meter",
                    "jwt": "auth only, cached RS256 JWT",
                    "jwt_uncached": "auth only, a new RS256 JWT each "
                                    "request (no cache hit)",
                    "jwt_forged": "auth only, a new RS256 JWT with a "
                                  "bad signature each request (401)",
                    "jwt_forged_ip": "the same from an address over "
                                     "its toll_limit_ip ... "
                                     "unauthenticated limit (429)",
                    "plugin": "the whole gate as limits and a no-op "
                              "plugin (toll_plugin noop)",
                    "units": "the whole gate as limits, priced per unit "
                             "of the upstream's X-Units",
                    "authz": "the whole gate as limits with toll_require "
                             "(two scopes, one of two roles) and the "
                             "envelope error format",
                    "llm_usage": "the whole gate priced per token, "
                                 "llm_usage reading a %d-byte event "
                                 "stream" % SSE_BYTES}[v]
            print("module instructions per request, %s, %d requests: "
                  "%.0f (target <= 5000 on cached paths)"
                  % (what, args.requests, per_request))
            print("  " + ", ".join(
                "%s %.0f" % (f.replace("ngx_http_toll_", ""),
                             ir / args.requests)
                for f, ir in parts.items() if ir))
            result.append("%s=%.0f" % (v, per_request))
            if v == "limits":
                print("  limit sync timer, per tick, not per request: %s "
                      "(%d ticks, %.0f instructions, in %.1f s)"
                      % ("%.0f" % (sync / ticks) if ticks else "-",
                         ticks, sync, secs))
                result.append("sync_per_tick=%.0f"
                              % (sync / ticks if ticks else 0))

        print("RESULT " + " ".join(result))

    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if args.keep:
            print("kept " + prefix)
        else:
            shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    main()
