#!/usr/bin/env bash
#
# toll benchmark: throughput of gated locations against plain proxy_pass,
# on the same gateway, in the same run.
#
#   benchmarks/auth_ratio.sh [options] BUILD_DIR      (make bench)
#
# Starts redis-server, an upstream (nginx answering return 200 "ok") and a
# gateway nginx with the module, then alternates wrk runs on /plain/ and
# the gated locations and prints requests/sec of each run, the ratio
# variant/plain per round and the medians.  The variants:
#
#   auth    /toll/:   "toll on; toll_limit off;": authentication only
#   limits  /limits/: "toll on;" and the key on a plan with a token bucket
#                     and a sliding window set too high to ever refuse:
#                     the whole gate (authentication and rate limits)
#   prepaid /prepaid/: the same with "toll_prepaid on" and a balance no
#                     run can spend: each call holds its price from the
#                     node's lease of the buyer's balance
#   plugin  /plugin/: the whole gate as limits, and "toll_plugin noop"
#                     (every hook, each doing nothing: t/plugins/noop.c)
#   units   /units/:  the whole gate as limits, on a service priced per
#                     unit (unit_price, max_units, units_header=X-Units);
#                     the upstream answers "X-Units: 42"
#   authz   /authz/:  the whole gate as limits, with "toll_require" (two
#                     scopes and a role the key has) and the envelope
#                     error format
#   llm_usage /llm/:  with --sse only: the whole gate on a service priced
#                     per unit, and "toll_plugin llm_usage" reading the
#                     tokens from the event stream
#
# See benchmarks/README.md for how to read the output.
#
# Options:
#   --variant V       auth, limits, prepaid, jwt, plugin, units, authz,
#                     llm_usage, a comma-separated list of them, both
#                     (auth and limits) or all (every one but llm_usage)
#                                   (default both; with --sse limits,llm_usage)
#   --sse             the upstream answers every path with the same 64 KiB
#                     text/event-stream (a streamed completion whose last
#                     event carries usage.total_tokens) instead of "ok"
#   --rounds N        rounds of (plain, variant...) runs      (default 7)
#   --store S         single (one redis-server) or cluster (three
#                     primaries, no replica): the gate's toll_redis and
#                     tollctl's --redis; the Redis commands per 1,000
#                     gated calls are printed at the end (default single)
#   --duration S      seconds per wrk run                     (default 5)
#   --connections C   wrk connections                         (default 32)
#   --threads T       wrk threads                             (default 1)
#   --cpu             also measure the gateway worker's CPU per request
#   --calibrate       A/A run: the variants' runs go to /plain/ as well,
#                     to show this machine's noise floor (ratios near 1)
#   --keep            keep the temporary prefix (configs, logs) on exit
#   -h, --help        this text

set -euo pipefail

NGINX=/usr/sbin/nginx
REDIS_SERVER=/usr/bin/redis-server
REDIS_CLI=/usr/bin/redis-cli
WRK=/usr/bin/wrk
PYTHON=/usr/bin/python3

VARIANT=
SSE=0
ROUNDS=7
DURATION_S=5
CONNECTIONS=32
THREADS=1
WARMUP_S=2
MEASURE_CPU=0
CALIBRATE=0
KEEP=0
START_TIMEOUT_S=10
STOP_TIMEOUT_S=5
# per-round ratios further apart than this say the machine was busy
SPREAD_WARN=1.10

# the limit plan of the "limits" variant: a token bucket (1.67 M/s, 1 M at
# once) and a sliding window (1e9 a day), so that both algorithms and the
# sync with Redis run on every request without ever refusing one
BENCH_PLAN="toll_plan bench rate=100000000r/m burst=1000000 rate=1000000000r/d;"

usage() {
    sed -n '3,/^$/s/^# \{0,1\}//p' "$0"
}

die() {
    echo "auth_ratio: $*" >&2
    exit 1
}

BUILD=
while [ $# -gt 0 ]; do
    case "$1" in
        --variant)     VARIANT=${2-}; shift 2 ;;
        --rounds)      ROUNDS=${2-}; shift 2 ;;
        --duration)    DURATION_S=${2-}; shift 2 ;;
        --connections) CONNECTIONS=${2-}; shift 2 ;;
        --threads)     THREADS=${2-}; shift 2 ;;
        --cpu)         MEASURE_CPU=1; shift ;;
        --sse)         SSE=1; shift ;;
        --calibrate)   CALIBRATE=1; shift ;;
        --store)       STORE=${2-}; shift 2 ;;
        --keep)        KEEP=1; shift ;;
        -h|--help)     usage; exit 0 ;;
        -*)            die "unknown option $1 (see --help)" ;;
        *)             BUILD=$1; shift ;;
    esac
done

[ -n "$BUILD" ] || die "usage: $0 [options] BUILD_DIR (see --help)"
[ -d "$BUILD" ] || die "no such directory: $BUILD"
BUILD=$(cd "$BUILD" && pwd)
MODULE=$BUILD/ngx_http_toll_module.so
TOLLCTL=$BUILD/tollctl
[ -f "$MODULE" ] || die "$MODULE not found: run make first"
[ -x "$TOLLCTL" ] || die "$TOLLCTL not found: run make first"
for prog in $NGINX $REDIS_SERVER $REDIS_CLI $WRK $PYTHON; do
    [ -x "$prog" ] || die "$prog not found: run make setup"
done
case "${STORE:=single}" in
    single|cluster) ;;
    *) die "--store: single or cluster, not \"$STORE\"" ;;
esac
for n in "$ROUNDS" "$DURATION_S" "$CONNECTIONS" "$THREADS"; do
    case "$n" in ''|*[!0-9]*|0) die "not a positive integer: \"$n\"" ;; esac
done
[ -n "$VARIANT" ] || { [ "$SSE" = 1 ] && VARIANT=limits,llm_usage; } \
    || VARIANT=both
case "$VARIANT" in
    both)            VARIANTS="auth limits" ;;
    all)             VARIANTS="auth limits prepaid jwt plugin units authz" ;;
    *)               VARIANTS=${VARIANT//,/ } ;;
esac
for v in $VARIANTS; do
    case "$v" in
        auth|limits|prepaid|jwt|plugin|units|authz) ;;
        llm_usage) [ "$SSE" = 1 ] || die "--variant llm_usage needs --sse" ;;
        *) die "--variant: auth, limits, prepaid, jwt, plugin, units, authz," \
               "llm_usage, a comma-separated list, both or all, not \"$v\"" ;;
    esac
done
# a toll_plugin line anywhere puts the plugins' handlers and filters on
# every path (plain included): only when a variant has one
case " $VARIANTS " in
    *" plugin "*|*" llm_usage "*) PLUGINS=1 ;;
    *)                            PLUGINS=0 ;;
esac
# the plugins "make" builds: the no-op one of t/plugins/, and llm_usage
NOOP_SO=$BUILD/plugins/test/noop.so
LLM_USAGE_SO=$BUILD/plugins/toll_llm_usage.so
if [ "$PLUGINS" = 1 ]; then
    for so in "$NOOP_SO" "$LLM_USAGE_SO"; do
        [ -f "$so" ] || die "$so not found: run make first"
    done
fi
# what one round runs, in this order in odd rounds and reversed in even ones
KINDS="plain $VARIANTS"
# the gateway location of each
declare -A LOCATION=([plain]=plain [auth]=toll [limits]=limits
                     [prepaid]=prepaid [jwt]=jwt [plugin]=plugin
                     [units]=units [authz]=authz [llm_usage]=llm)


# -- CPU layout ---------------------------------------------------------------
#
# The gateway is what we measure, so its one worker gets a core of its own
# (the last one); wrk, the upstream worker and Redis share the others.  On
# the 2-core box that is: CPU 1 = gateway, CPU 0 = wrk + upstream + Redis.
# One gateway worker keeps the comparison simple (no accept balancing
# between workers) and makes "CPU per request" one process's counters.
# With a single CPU nothing is pinned and the ratio is only indicative.

NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then
    GW_CPU=$((NCPU - 1))
    OTHER_CPUS=0
    [ "$NCPU" -eq 2 ] || OTHER_CPUS=0-$((NCPU - 2))
    # worker_cpu_affinity takes a bit mask, highest CPU leftmost
    GW_MASK=1$(printf '%*s' "$GW_CPU" '' | tr ' ' 0)
    PIN="taskset -c $OTHER_CPUS"
    GW_AFFINITY="worker_cpu_affinity $GW_MASK;"
    UP_AFFINITY="worker_cpu_affinity 1;"
    LAYOUT="gateway worker on CPU $GW_CPU;"
    LAYOUT="$LAYOUT wrk, upstream worker and redis on CPU $OTHER_CPUS"
else
    PIN=
    GW_AFFINITY=
    UP_AFFINITY=
    LAYOUT="1 CPU: nothing pinned, every process shares it"
fi

# nginx workers drop to "nobody" when the master runs as root; keep them
# as root so that they can use the private temporary prefix
USER_LINE=
[ "$(id -u)" != 0 ] || USER_LINE="user root;"


# -- how busy the machine is before we start --------------------------------

cpu_idle_total() {
    # idle + iowait, and the sum of all fields, of /proc/stat's "cpu" line
    awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i;
                   print $5 + $6, t; exit }' /proc/stat
}

# other work (a compile, a test suite) takes cores away for part of a run
# and makes the figures noisy; the load average would also count a
# benchmark that has just ended, so sample the CPUs for a second instead
read -r idle0 total0 <<<"$(cpu_idle_total)"
sleep 1
read -r idle1 total1 <<<"$(cpu_idle_total)"
OTHER_BUSY=$(( 100 - 100 * (idle1 - idle0) / (total1 - total0 + 1) ))
OTHER_BUSY_WARN=10


# -- processes and cleanup ----------------------------------------------------

PREFIX=$(mktemp -d /tmp/toll-bench-XXXXXX)
mkdir -p "$PREFIX/logs" "$PREFIX/gw/tmp" "$PREFIX/up/tmp" "$PREFIX/redis"

REDIS_PID=
UP_PID=
GW_PID=

stop_pid() {
    # $1 pid, $2 polite signal; SIGKILL after STOP_TIMEOUT_S
    local pid=$1 sig=$2 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT_S * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "auth_ratio: pid $pid did not stop, killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # gateway first, so that nothing is proxied to a stopped upstream
    stop_pid "$GW_PID" QUIT
    stop_pid "$UP_PID" QUIT
    for pid in $REDIS_PIDS; do
        stop_pid "$pid" TERM
    done
    if [ "$KEEP" = 1 ]; then
        echo "kept $PREFIX"
    else
        rm -rf "$PREFIX"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "auth_ratio: interrupted" >&2; exit 130' INT TERM

# Run private copies: "make" rewrites build/*.so in place, and a running
# nginx whose mapped module changes under it crashes.  A copy keeps a
# rebuild during the run from ending it (or, worse, skewing it).
cp "$MODULE" "$PREFIX/ngx_http_toll_module.so"
cp "$TOLLCTL" "$PREFIX/tollctl"
MODULE=$PREFIX/ngx_http_toll_module.so
TOLLCTL=$PREFIX/tollctl
if [ "$PLUGINS" = 1 ]; then
    cp "$NOOP_SO" "$PREFIX/noop.so"
    cp "$LLM_USAGE_SO" "$PREFIX/toll_llm_usage.so"
    NOOP_SO=$PREFIX/noop.so
    LLM_USAGE_SO=$PREFIX/toll_llm_usage.so
fi

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket()
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {
    # $1 url, $2 pid that must stay alive
    local i
    for ((i = 0; i < START_TIMEOUT_S * 20; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.05
    done
    return 1
}

show_log() {
    echo "--- $1" >&2
    tail -n 20 "$1" >&2 || true
}


# -- Redis --------------------------------------------------------------------

REDIS_PORT=$(free_port)
REDIS_PORTS=$REDIS_PORT
REDIS_PIDS=
if [ "$STORE" = cluster ]; then
    # three primaries, no replica (money writes wait for none: replicas=0),
    # on ports whose cluster bus (+10000) stays below the ephemeral range
    REDIS_PORTS=
    for ((i = 0; i < 3; i++)); do
        while :; do
            p=$((12000 + RANDOM % 10000))
            (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null \
                || (echo >"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null \
                || break
        done
        REDIS_PORTS="$REDIS_PORTS $p"
    done
    REDIS_PORTS=${REDIS_PORTS# }
    REDIS_PORT=${REDIS_PORTS%% *}
fi
for p in $REDIS_PORTS; do
    mkdir -p "$PREFIX/redis/$p"
    extra=()
    [ "$STORE" = cluster ] && extra=(--cluster-enabled yes
        --cluster-config-file "$PREFIX/redis/$p/nodes.conf")
    $PIN "$REDIS_SERVER" --bind 127.0.0.1 --port "$p" \
        --save '' --appendonly no --dir "$PREFIX/redis/$p" "${extra[@]}" \
        --logfile "$PREFIX/logs/redis-$p.log" --daemonize no </dev/null &
    REDIS_PIDS="$REDIS_PIDS $!"
done
REDIS_PID=${REDIS_PIDS# }

redis_up() {
    local p
    for p in $REDIS_PORTS; do
        [ "$("$REDIS_CLI" -p "$p" ping 2>/dev/null)" = PONG ] || return 1
    done
}

for ((i = 0; i < START_TIMEOUT_S * 20; i++)); do
    redis_up && break
    sleep 0.05
done
redis_up || { show_log "$PREFIX/logs/redis-$REDIS_PORT.log"
              die "redis-server did not start"; }

if [ "$STORE" = cluster ]; then
    seeds=
    for p in $REDIS_PORTS; do seeds="$seeds 127.0.0.1:$p"; done
    # shellcheck disable=SC2086
    "$REDIS_CLI" --cluster create $seeds --cluster-yes >/dev/null \
        || die "redis-cli --cluster create failed"
    for ((i = 0; i < START_TIMEOUT_S * 20; i++)); do
        "$REDIS_CLI" -p "$REDIS_PORT" cluster info 2>/dev/null \
            | grep -q '^cluster_state:ok' && break
        sleep 0.05
    done
    seeds=${seeds# }
    REDIS_SPEC="cluster=${seeds// /,}"
    REDIS_LINE="toll_redis $REDIS_SPEC timeout=500ms replicas=0;"
else
    REDIS_SPEC="127.0.0.1:$REDIS_PORT"
    REDIS_LINE="toll_redis 127.0.0.1:$REDIS_PORT timeout=500ms;"
fi

# the commands every node has run: a delta over the rounds, per gated call
redis_commands() {
    local p n=0 c
    for p in $REDIS_PORTS; do
        c=$("$REDIS_CLI" -p "$p" info stats 2>/dev/null \
            | tr -d '\r' | sed -n 's/^total_commands_processed://p')
        n=$((n + ${c:-0}))
    done
    echo "$n"
}


# -- upstream: nginx answering 200 "ok", so that no Python is in the path -----

# the units a units_header service reads, and the tokens llm_usage reads
UNITS=42
SSE_TOKENS=4242
SSE_BYTES=65536
UP_ANSWER='default_type text/plain; return 200 "ok";'
if [ "$SSE" = 1 ]; then
    # a streamed completion of SSE_BYTES: content deltas with a null usage,
    # the usage in the last event, then [DONE] (what llm_usage reads);
    # the first delta is padded to the exact size
    "$PYTHON" - "$PREFIX/up/sse.txt" "$SSE_BYTES" "$SSE_TOKENS" <<'PY' \
        || die "could not write the event stream"
import json, sys
path, size, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
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
body = delta(size - len(tail) - n * len(delta())) + delta() * (n - 1) + tail
assert len(body) == size
open(path, "w").write(body)
PY
    UP_ANSWER="root $PREFIX/up; default_type text/event-stream;"
    UP_ANSWER="$UP_ANSWER try_files /sse.txt =404;"
fi

UP_PORT=$(free_port)
cat > "$PREFIX/up/nginx.conf" <<EOF
worker_processes 1;
$UP_AFFINITY
daemon off;
$USER_LINE
pid $PREFIX/up/nginx.pid;
lock_file $PREFIX/up/nginx.lock;
error_log $PREFIX/logs/upstream-error.log warn;

events {
    worker_connections 1024;
}

http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $PREFIX/up/tmp/body;
    proxy_temp_path       $PREFIX/up/tmp/proxy;
    fastcgi_temp_path     $PREFIX/up/tmp/fastcgi;
    uwsgi_temp_path       $PREFIX/up/tmp/uwsgi;
    scgi_temp_path        $PREFIX/up/tmp/scgi;

    server {
        listen 127.0.0.1:$UP_PORT;
        location / {
            $UP_ANSWER
        }

        # the same answer, with the units a units_header service charges
        location /units/ {
            $UP_ANSWER
            add_header X-Units $UNITS always;
        }
    }
}
EOF

"$NGINX" -p "$PREFIX/up/" -c "$PREFIX/up/nginx.conf" \
    -e "$PREFIX/logs/upstream-error.log" </dev/null \
    >"$PREFIX/logs/upstream.stderr" 2>&1 &
UP_PID=$!
wait_http "http://127.0.0.1:$UP_PORT/" "$UP_PID" \
    || { show_log "$PREFIX/logs/upstream-error.log"
         die "upstream nginx did not start"; }


# -- a JWT signing secret (HS256, 32 random bytes) for the jwt variant -------

JWT_SECRET_FILE=$PREFIX/gw/jwt.secret
head -c 32 /dev/urandom > "$JWT_SECRET_FILE"

# -- gateway: /plain/, /toll/ and /limits/ on one server, same upstream pool --

# priced per unit: what units and llm_usage charge is 0.001 + units x
# 0.000001 (the hold, never needed here: 0.001 + 100000 x 0.000001)
UNIT_PRICE="price=0.001 unit_price=0.000001 max_units=100000"
PLUGIN_LOAD=
PLUGIN_LOCATIONS=
if [ "$PLUGINS" = 1 ]; then
    PLUGIN_LOAD="toll_plugin_load noop $NOOP_SO;"
    PLUGIN_LOAD="$PLUGIN_LOAD toll_plugin_load llm_usage $LLM_USAGE_SO;"
    PLUGIN_LOAD="$PLUGIN_LOAD log_format bench_amount \$toll_amount;"
    PLUGIN_LOCATIONS=$(cat <<EOF
        # plugin: the whole gate as /limits/, and a plugin whose hooks
        # do nothing
        location /plugin/ {
            toll on;
            toll_service bench provider=bench price=0.001;
            toll_plugin noop;

            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        # llm_usage: the whole gate, priced per token, the tokens read
        # from the event stream by the plugin
        location /llm/ {
            toll on;
            toll_service bench-tokens provider=bench $UNIT_PRICE;
            toll_plugin llm_usage;

            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        # the same, logging what each call was charged: the proof, before
        # measuring, that the plugin read the tokens
        location /llmcheck/ {
            toll on;
            toll_service bench-tokens provider=bench $UNIT_PRICE;
            toll_plugin llm_usage;
            access_log $PREFIX/logs/llm-amount.log bench_amount;

            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
EOF
)
fi

GW_PORT=$(free_port)
cat > "$PREFIX/gw/nginx.conf" <<EOF
load_module $MODULE;

worker_processes 1;
$GW_AFFINITY
daemon off;
$USER_LINE
pid $PREFIX/gw/nginx.pid;
lock_file $PREFIX/gw/nginx.lock;
error_log $PREFIX/logs/gateway-error.log warn;

events {
    worker_connections 1024;
}

http {
    # the cache TTLs are left at their defaults: one Redis lookup per key
    # every toll_cache_ttl is the steady state providers run
    $REDIS_LINE
    toll_zone 4m;
    toll_jwt_key $JWT_SECRET_FILE alg=HS256;
    # the key's plan; toll_limit_sync is left at its default (100 ms)
    $BENCH_PLAN
    $PLUGIN_LOAD

    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $PREFIX/gw/tmp/body;
    proxy_temp_path       $PREFIX/gw/tmp/proxy;
    fastcgi_temp_path     $PREFIX/gw/tmp/fastcgi;
    uwsgi_temp_path       $PREFIX/gw/tmp/uwsgi;
    scgi_temp_path        $PREFIX/gw/tmp/scgi;

    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$GW_PORT;

        location /plain/ {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        # auth: authentication only, the key's plan is not applied
        location /toll/ {
            toll on;
            toll_limit off;

            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        # jwt: a JWT instead of an API key, authentication only; after the
        # first request the verified token comes from the zone's cache
        location /jwt/ {
            toll on;
            toll_jwt on;
            toll_limit off;

            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        # limits: the whole gate: authentication, the key's plan, a price
        # (the bench key is past no free tier) and the meter
        location /limits/ {
            toll on;
            toll_service bench provider=bench price=0.001;

            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        # prepaid: the whole gate, and each call held from the node's
        # lease of the buyer's balance
        location /prepaid/ {
            toll on;
            toll_prepaid on;
            toll_service bench provider=bench price=0.001;

            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        # units: the whole gate, priced per unit of the upstream's X-Units
        location /units/ {
            toll on;
            toll_service bench-units provider=bench $UNIT_PRICE
                units_header=X-Units;

            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        # authz: the whole gate, and what the caller may do checked: every
        # scope and one of the roles (the key has them), errors enveloped
        location /authz/ {
            toll on;
            toll_require scope=read scope=write role=admin role=buyer;
            toll_error_format envelope;
            toll_service bench provider=bench price=0.001;

            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
$PLUGIN_LOCATIONS
    }
}
EOF

GW_ARGS=(-p "$PREFIX/gw/" -c "$PREFIX/gw/nginx.conf"
         -e "$PREFIX/logs/gateway-error.log")
"$NGINX" "${GW_ARGS[@]}" -t -q </dev/null \
    || { show_log "$PREFIX/logs/gateway-error.log"
         die "nginx -t rejected the gateway configuration"; }
"$NGINX" "${GW_ARGS[@]}" </dev/null >"$PREFIX/logs/gateway.stderr" 2>&1 &
GW_PID=$!
wait_http "http://127.0.0.1:$GW_PORT/plain/" "$GW_PID" \
    || { show_log "$PREFIX/logs/gateway-error.log"
         die "gateway nginx did not start"; }

GW_WORKER=$(pgrep -P "$GW_PID" | head -n 1)
[ -n "$GW_WORKER" ] || die "no gateway worker process under pid $GW_PID"


# -- a key, and proof that the gate is really on ------------------------------

KEY_JSON=$("$TOLLCTL" --redis "$REDIS_SPEC" key create \
               --owner bench-buyer --plan bench --scopes read,write) \
    || die "tollctl key create failed"
TOKEN=$(printf '%s' "$KEY_JSON" | "$PYTHON" -c \
            'import json, sys; print(json.load(sys.stdin)["token"])') \
    || die "tollctl printed no token: $KEY_JSON"
AUTH="Authorization: Bearer $TOKEN"
# an HS256 token for a day, made by an independent library (python3-jwt)
JWT=$("$PYTHON" -c 'import jwt, sys, time
print(jwt.encode({"sub": "bench-buyer", "exp": int(time.time()) + 86400},
                 open(sys.argv[1], "rb").read(), algorithm="HS256"))' \
          "$JWT_SECRET_FILE") || die "python3-jwt could not make a token"
# the header each kind sends: the API key everywhere but on /jwt/
# a balance no run can spend: 1,000,000,000 at 0.001 a call
"$TOLLCTL" --redis "$REDIS_SPEC" balance credit bench-buyer \
    1000000000 --ref bench >/dev/null \
    || die "tollctl balance credit failed"
declare -A HEADER=([plain]="$AUTH" [auth]="$AUTH" [limits]="$AUTH"
                   [prepaid]="$AUTH" [plugin]="$AUTH" [units]="$AUTH"
                   [authz]="$AUTH"
                   [llm_usage]="$AUTH"
                   [jwt]="Authorization: Bearer $JWT")

status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true
}

# the status and the response headers, lower-cased, on one line each
headers() {
    curl -s -o /dev/null -D - -w '%{http_code}\n' --max-time 5 "$@" \
        | tr -d '\r' | tr '[:upper:]' '[:lower:]' || true
}

BASE=http://127.0.0.1:$GW_PORT
# the first call misses the cache and asks Redis; later ones are cached
[ "$(status -H "$AUTH" "$BASE/toll/")" = 200 ] \
    || { show_log "$PREFIX/logs/gateway-error.log"
         die "/toll/ with the key did not answer 200"; }
# a ratio is only meaningful if the gated locations really check keys
for v in $VARIANTS; do
    [ "$(status "$BASE/${LOCATION[$v]}/")" = 401 ] \
        || die "/${LOCATION[$v]}/ without a key did not answer 401:" \
               "is the gate on?"
done
[ "$(status -H "$AUTH" "$BASE/plain/")" = 200 ] \
    || die "/plain/ did not answer 200"
[ "$(status -H "${HEADER[jwt]}" "$BASE/jwt/")" = 200 ] \
    || { show_log "$PREFIX/logs/gateway-error.log"
         die "/jwt/ with the token did not answer 200"; }
# ... and if limits are computed where they should be, and only there: the
# plan's bucket ("burst") and window ("day") in the answer on /limits/
hdrs=$(headers -H "$AUTH" "$BASE/limits/")
grep -qx 200 <<<"$hdrs" \
    || { show_log "$PREFIX/logs/gateway-error.log"
         die "/limits/ with the key did not answer 200"; }
grep -q '^ratelimit-policy: .*"burst".*"day"' <<<"$hdrs" \
    || { echo "$hdrs" >&2
         die "/limits/ has no RateLimit-Policy with the plan's bucket and" \
             "window: are the limits on?"; }
! grep -q '^ratelimit' <<<"$(headers -H "$AUTH" "$BASE/toll/")" \
    || die "/toll/ answered RateLimit headers: its limits should be off"
# ... and the balance pays on /prepaid/, only there
grep -q '^x-toll-balance: ' <<<"$(headers -H "$AUTH" "$BASE/prepaid/")" \
    || die "/prepaid/ answered no X-Toll-Balance: is toll_prepaid on?"
# ... and what the caller may do is checked on /authz/: the key has the
# scopes, a key without them is refused 403 in the envelope
if [[ " $VARIANTS " == *" authz "* ]]; then
    [ "$(status -H "$AUTH" "$BASE/authz/")" = 200 ] \
        || die "/authz/ with the key and its scopes did not answer 200"
    BARE=$("$TOLLCTL" --redis "$REDIS_SPEC" key create \
               --owner bench-bare --plan bench \
           | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["token"])') \
        || die "tollctl key create (no scopes) failed"
    [ "$(status -H "Authorization: Bearer $BARE" "$BASE/authz/")" = 403 ] \
        || die "/authz/ with a key without scopes did not answer 403"
fi
# ... and the upstream's units are charged on /units/ (and its header
# removed from the answer)
hdrs=$(headers -H "$AUTH" "$BASE/units/")
grep -qx "x-toll-units: $UNITS" <<<"$hdrs" && ! grep -q '^x-units:' <<<"$hdrs" \
    || { echo "$hdrs" >&2
         die "/units/ did not charge for the upstream's X-Units: $UNITS"; }
if [ "$SSE" = 1 ]; then
    # every path proxies the same event stream
    [ "$(curl -s -o /dev/null -w '%{size_download}' --max-time 5 \
              -H "$AUTH" "$BASE/plain/")" = "$SSE_BYTES" ] \
        || die "/plain/ did not answer the $SSE_BYTES bytes of the stream"
fi
if [ "$PLUGINS" = 1 ] && [ "$SSE" = 1 ]; then
    # ... and llm_usage read its tokens: charged 0.001 + 4242 x 0.000001
    [ "$(status -H "$AUTH" "$BASE/llmcheck/")" = 200 ] \
        || die "/llmcheck/ with the key did not answer 200"
    amount=$(printf '0.%06d' $((1000 + SSE_TOKENS)))
    for ((i = 0; i < 20; i++)); do
        [ ! -s "$PREFIX/logs/llm-amount.log" ] || break
        sleep 0.05
    done
    grep -qx "$amount" "$PREFIX/logs/llm-amount.log" \
        || { cat "$PREFIX/logs/llm-amount.log" >&2
             die "llm_usage did not charge $amount for $SSE_TOKENS tokens:" \
                 "did it read the stream?"; }
fi


# -- measuring ----------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)

alive() {
    if ! kill -0 "$GW_PID" 2>/dev/null || ! kill -0 "$GW_WORKER" 2>/dev/null
    then
        show_log "$PREFIX/logs/gateway-error.log"
        die "the gateway nginx (pid $GW_PID) or its worker is gone"
    fi
    if ! kill -0 "$UP_PID" 2>/dev/null; then
        show_log "$PREFIX/logs/upstream-error.log"
        die "the upstream nginx (pid $UP_PID) is gone"
    fi
}

cpu_ticks() {
    # utime + stime of the gateway worker, in clock ticks; fields counted
    # after the ")" that closes the command name (state is the first)
    local -a f
    read -r -a f <<<"$(sed 's/^.*) //' "/proc/$GW_WORKER/stat")"
    echo $((f[11] + f[12]))
}

# requests wrk counted per kind, warm-up included; all of them were 2xx,
# or run_wrk stopped the run
declare -A TOTAL_REQS
for kind in $KINDS; do TOTAL_REQS[$kind]=0; done

# wrk on the location of $1 (plain, auth, limits) for $2 seconds; sets RPS,
# REQS and TICKS
run_wrk() {
    local kind=$1 secs=$2 path out t0 t1 errors hint=
    path=${LOCATION[$kind]}
    [ "$CALIBRATE" = 0 ] || path=plain

    alive
    t0=$(cpu_ticks)
    # the same API key header on all but /jwt/: the only difference
    # between them is the gate
    out=$($PIN "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" \
              -H "${HEADER[$kind]}" "$BASE/$path/" 2>&1) \
        || { echo "$out" >&2; die "wrk failed on /$path/"; }
    alive
    t1=$(cpu_ticks)
    printf '== %s /%s/\n%s\n' "$kind" "$path" "$out" >> "$PREFIX/logs/wrk.log"

    # a worker that crashed and was respawned has new counters
    [ "$(pgrep -P "$GW_PID" | head -n 1)" = "$GW_WORKER" ] \
        || { show_log "$PREFIX/logs/gateway-error.log"
             die "the gateway worker $GW_WORKER died during a /$path/ run"; }

    if grep -q 'Non-2xx' <<<"$out"; then
        echo "$out" >&2
        show_log "$PREFIX/logs/gateway-error.log"
        [ "$path" != limits ] || hint=" (429s would be the bench plan refusing)"
        die "/$path/ answered non-2xx statuses$hint:" \
            "a ratio of errors is meaningless"
    fi
    errors=$(grep 'Socket errors' <<<"$out" || true)
    [ -z "$errors" ] || echo "auth_ratio: warning: /$path/:" \
                             "socket errors: ${errors##*errors: }" >&2

    RPS=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    REQS=$(awk '/ requests in / { print $1 }' <<<"$out")
    if [ -z "$RPS" ] || [ -z "$REQS" ] || [ "$REQS" -le 0 ]; then
        echo "$out" >&2
        die "could not read wrk's output"
    fi
    TICKS=$((t1 - t0))
    TOTAL_REQS[$kind]=$((TOTAL_REQS[$kind] + REQS))
}

median() {
    sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2];
              else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

calc() {
    # calc FORMAT EXPR [name=value ...]: awk arithmetic
    local fmt=$1 expr=$2
    shift 2
    awk "$@" "BEGIN { printf \"$fmt\", $expr }" /dev/null
}

# one line of the table: the round (or "median"), then per kind its req/s
# and, for a variant, the ratio to plain; with --cpu then per kind its
# microseconds per request and, for a variant, the CPU ratio to plain.
# Reads the associative arrays row_rps, row_ratio, row_us, row_cpu.
print_row() {
    local kind
    printf '%-6s' "$1"
    for kind in $KINDS; do
        printf ' %12s' "${row_rps[$kind]}"
        [ "$kind" = plain ] || printf ' %6s' "${row_ratio[$kind]}"
    done
    if [ "$MEASURE_CPU" = 1 ]; then
        printf '  '
        for kind in $KINDS; do
            printf ' %-14s' "${row_us[$kind]}"
            [ "$kind" = plain ] || printf ' %6s' "${row_cpu[$kind]}"
        done
    fi
    printf '\n'
}

REVERSED=$(tr ' ' '\n' <<<"$KINDS" | tac | tr '\n' ' ')
REVERSED=${REVERSED% }

echo "toll auth_ratio: $LAYOUT"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION_S}s, $ROUNDS rounds," \
     "in the order ${KINDS// /, } in odd rounds, ${REVERSED// /, } in" \
     "even ones;"
echo "the same Authorization header on all;" \
     "nginx $("$NGINX" -v 2>&1 | sed 's/^.*\///'), $NCPU CPUs," \
     "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
for v in $VARIANTS; do
    case $v in
        auth)   echo "auth:   /toll/, authentication only (toll_limit off)" ;;
        limits) echo "limits: /limits/, the whole gate: authentication," \
                     "metering at price 0.001 and the plan: $BENCH_PLAN" ;;
        prepaid) echo "prepaid: /prepaid/, the same with toll_prepaid on:" \
                      "each call held from the node's lease of a balance" ;;
        plugin) echo "plugin: /plugin/, the whole gate as limits and" \
                     "toll_plugin noop (five hooks doing nothing)" ;;
        units)  echo "units:  /units/, the whole gate priced per unit of" \
                     "the upstream's X-Units: $UNITS" ;;
        authz)  echo "authz:  /authz/, the whole gate as limits with" \
                     "toll_require (2 scopes, 2 roles) and the envelope" ;;
        llm_usage) echo "llm_usage: /llm/, the whole gate priced per token," \
                        "toll_plugin llm_usage reading the stream's" \
                        "usage.total_tokens ($SSE_TOKENS)" ;;
    esac
done
[ "$PLUGINS" = 0 ] \
    || echo "plugins loaded: every path, /plain/ included, passes their" \
            "handlers and filters (a location without plugins returns at once)"
[ "$SSE" = 0 ] \
    || echo "upstream: every path answers the same $SSE_BYTES-byte" \
            "text/event-stream (a static file)"
[ "$CALIBRATE" = 0 ] \
    || echo "CALIBRATION: the variants' columns are /plain/ too (A/A run)"
if [ "$OTHER_BUSY" -gt "$OTHER_BUSY_WARN" ]; then
    echo "warning: the CPUs were ${OTHER_BUSY}% busy just before the run:" \
         "other work on this machine will make the figures noisy"
fi

# warm all paths: keepalive pools, the key cache, the limit state, the
# CPU's caches
for kind in $KINDS; do
    run_wrk "$kind" "$WARMUP_S"
done

echo
declare -A row_rps row_ratio row_us row_cpu
for kind in $KINDS; do
    row_rps[$kind]="$kind req/s"
    row_ratio[$kind]=ratio
    row_us[$kind]="$kind us/req"
    row_cpu[$kind]=cpu
    : > "$PREFIX/$kind.rps"
    : > "$PREFIX/$kind.us"
    : > "$PREFIX/$kind.ratio"
    : > "$PREFIX/$kind.cpu"
done
print_row round

# per kind in the current round: requests/sec, microseconds of gateway
# worker CPU per request, and the share of its core it used
declare -A rps us busy

COMMANDS_AT_START=$(redis_commands)
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=$KINDS; else order=$REVERSED; fi
    for kind in $order; do
        run_wrk "$kind" "$DURATION_S"
        rps[$kind]=$RPS
        us[$kind]=$(calc '%.2f' 't / hz * 1e6 / n' \
                        -v t="$TICKS" -v hz="$CLK_TCK" -v n="$REQS")
        busy[$kind]=$(calc '%.0f' 't / hz / s * 100' \
                          -v t="$TICKS" -v hz="$CLK_TCK" -v s="$DURATION_S")
    done
    for kind in $KINDS; do
        echo "${rps[$kind]}" >> "$PREFIX/$kind.rps"
        echo "${us[$kind]}" >> "$PREFIX/$kind.us"
        row_rps[$kind]=$(calc '%.0f' 'r' -v r="${rps[$kind]}")
        row_us[$kind]="${us[$kind]} (${busy[$kind]}%)"
        [ "$kind" != plain ] || continue
        row_ratio[$kind]=$(calc '%.3f' 'a / b' \
                               -v a="${rps[$kind]}" -v b="${rps[plain]}")
        row_cpu[$kind]=$(calc '%.3f' '(b > 0) ? a / b : 0' \
                             -v a="${us[$kind]}" -v b="${us[plain]}")
        echo "${row_ratio[$kind]}" >> "$PREFIX/$kind.ratio"
        echo "${row_cpu[$kind]}" >> "$PREFIX/$kind.cpu"
    done
    print_row "$round"
done

# the median row: medians of req/s and us/req, the ratio of the medians
# of req/s, and the median of the per-round CPU ratios
declare -A med_rps med_ratio ratio_of_medians min_ratio max_ratio med_cpu
for kind in $KINDS; do
    med_rps[$kind]=$(median < "$PREFIX/$kind.rps")
    row_rps[$kind]=$(calc '%.0f' 'r' -v r="${med_rps[$kind]}")
    row_us[$kind]=$(median < "$PREFIX/$kind.us")
done
for v in $VARIANTS; do
    med_ratio[$v]=$(calc '%.3f' 'm' -v m="$(median < "$PREFIX/$v.ratio")")
    ratio_of_medians[$v]=$(calc '%.3f' 'a / b' \
                               -v a="${med_rps[$v]}" -v b="${med_rps[plain]}")
    min_ratio[$v]=$(sort -g "$PREFIX/$v.ratio" | head -n 1)
    max_ratio[$v]=$(sort -g "$PREFIX/$v.ratio" | tail -n 1)
    med_cpu[$v]=$(calc '%.3f' 'm' -v m="$(median < "$PREFIX/$v.cpu")")
    row_ratio[$v]=${ratio_of_medians[$v]}
    row_cpu[$v]=${med_cpu[$v]}
done
print_row median

echo
for v in $VARIANTS; do
    echo "throughput $v/plain: median of per-round ratios ${med_ratio[$v]}," \
         "ratio of medians ${ratio_of_medians[$v]} (target >= 0.95)"
done
if [ "$MEASURE_CPU" = 1 ]; then
    for v in $VARIANTS; do
        echo "gateway CPU per request $v/plain: median of per-round ratios" \
             "${med_cpu[$v]} (target <= 1.10)"
    done
fi
# a plugin that does nothing should change nothing: plugin against the
# whole gate without it, round by round
per_round() {
    # per_round a b: the median of a/b over the rounds, from two files
    calc '%.3f' 'm' -v m="$(paste "$1" "$2" \
        | awk '{ printf "%.3f\n", ($2 > 0) ? $1 / $2 : 0 }' | median)"
}
if [[ " $VARIANTS " == *" limits "* && " $VARIANTS " == *" plugin "* ]]; then
    line="throughput $(per_round "$PREFIX/plugin.rps" "$PREFIX/limits.rps")"
    if [ "$MEASURE_CPU" = 1 ]; then
        line="$line, gateway CPU per request"
        line="$line $(per_round "$PREFIX/plugin.us" "$PREFIX/limits.us")"
    fi
    echo "plugin/limits: median of per-round ratios: $line" \
         "(target: no measurable change)"
fi
for v in $VARIANTS; do
    if awk -v lo="${min_ratio[$v]}" -v hi="${max_ratio[$v]}" \
           -v w="$SPREAD_WARN" 'BEGIN { exit !(hi > lo * w) }'; then
        echo "warning: per-round $v/plain ratios range from" \
             "${min_ratio[$v]} to ${max_ratio[$v]}: the machine was busy or" \
             "noisy; rerun when it is quiet (--calibrate shows the noise" \
             "floor)"
    fi
done
requests=
for kind in $KINDS; do
    requests="$requests, $kind ${TOTAL_REQS[$kind]}"
done
echo "requests (warm-up included): ${requests#, }; wrk counted no" \
     "non-2xx answer"
gated=0
for v in $VARIANTS; do
    gated=$((gated + ${TOTAL_REQS[$v]:-0}))
done
commands=$(( $(redis_commands) - COMMANDS_AT_START ))
echo "redis ($STORE): $commands commands for $gated gated calls," \
     "$(calc '%.1f' '(g > 0) ? c * 1000 / g : 0' -v c="$commands" \
        -v g="$gated") per 1,000 (timers and warm-ups included)"

# a clean run leaves nothing worse than a warning in the gateway's log
if grep -E '\[(alert|crit|emerg)\]|exited on signal' \
        "$PREFIX/logs/gateway-error.log" >&2; then
    die "the gateway logged errors during the run (above)"
fi
# nor a refusal: the bench plan is there to be computed, not to refuse
if grep -F 'toll: limited' "$PREFIX/logs/gateway-error.log" >&2; then
    die "the bench plan refused requests during the run (above)"
fi

for v in $VARIANTS; do
    result="RESULT variant=$v rounds=$ROUNDS median_ratio=${med_ratio[$v]}"
    result="$result ratio_of_medians=${ratio_of_medians[$v]}"
    result="$result min_ratio=${min_ratio[$v]} max_ratio=${max_ratio[$v]}"
    [ "$MEASURE_CPU" = 0 ] || result="$result cpu_ratio=${med_cpu[$v]}"
    echo "$result"
done
