#!/bin/bash
# make docker-test: docker/'s images and compose set, built and run with
# Podman on a machine without a registry, checked through their ports.
#
#   1. podman is configured by a file of its own (CONTAINERS_CONF, under
#      build/docker/): no system file is edited;
#   2. the base image localhost/debian:bookworm is made with debootstrap
#      from the mirror apt uses, and kept with "podman save" in
#      build/docker/ (a later run loads it: no debootstrap);
#   3. the images are built (--format docker, so that HEALTHCHECK stays);
#   4. the compose set comes up as project $PROJECT on loopback ports of
#      28000-28999 (never the 12000-22000 the pytest suites use);
#   5. checks: a good key's 200 and its billing headers, a bad key's 401
#      problem+json, the calls in toll_usage, in the ledger (tollctl in
#      toll-settle's container), in Prometheus; health checks, users,
#      a reload; Grafana when its image is here, else its provisioning;
#   6. everything of the project is removed, containers, volumes and
#      network, on success and on failure (trap), before a run too.
#
# Environment: TOLL_TEST_GATE_PORT (28180), TOLL_TEST_METRICS_PORT
# (28181), TOLL_TEST_PROMETHEUS_PORT (28190), TOLL_TEST_GRAFANA_PORT
# (28130), TOLL_GRAFANA_IMAGE, TOLL_DOCKER_KEEP=1 (leave the set up).

set -euo pipefail

TOP=$(cd "$(dirname "$0")/../.." && pwd)
cd "$TOP"

OUT=$TOP/build/docker
LOG=$OUT/docker-test.log
PROJECT=tolltest
BASE_IMAGE=localhost/debian:bookworm
BASE_TAR=$OUT/debian-bookworm.tar
SUITE=bookworm
PYTHON=/usr/bin/python3

export TOLL_GATE_PORT=${TOLL_TEST_GATE_PORT:-28180}
export TOLL_METRICS_PORT=${TOLL_TEST_METRICS_PORT:-28181}
export TOLL_PROMETHEUS_PORT=${TOLL_TEST_PROMETHEUS_PORT:-28190}
export TOLL_GRAFANA_PORT=${TOLL_TEST_GRAFANA_PORT:-28130}
export TOLL_BASE=$BASE_IMAGE
GRAFANA_IMAGE=${TOLL_GRAFANA_IMAGE:-docker.io/grafana/grafana-oss:11.3.1}
export TOLL_GRAFANA_IMAGE=$GRAFANA_IMAGE

GATE=http://127.0.0.1:$TOLL_GATE_PORT
PROM=http://127.0.0.1:$TOLL_PROMETHEUS_PORT
GRAFANA=http://127.0.0.1:$TOLL_GRAFANA_PORT
COMPOSE_FILES=(-f docker/compose.yaml)

T_START=$(date +%s.%N)
FAILED=0

mkdir -p "$OUT"
: > "$LOG"

say() { printf '%s\n' "$*"; }
since() { $PYTHON -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(date +%s.%N)"; }
fail() { say "FAIL: $*"; FAILED=1; exit 1; }
ok() { say "ok   $*"; }

compose() { podman-compose -p "$PROJECT" "${COMPOSE_FILES[@]}" "$@"; }
cname() { printf '%s_%s_1' "$PROJECT" "$1"; }

# -- podman's configuration ------------------------------------------------

# crun refuses this kernel's mixed cgroup layout; no systemd here for the
# systemd cgroup manager; ulimits no higher than the hard limits we have;
# events in a file (no journald)
configure_podman() {
    local nofile nproc
    nofile=$(ulimit -Hn)
    nproc=$(ulimit -Hu)
    [ "$nofile" = unlimited ] && nofile=1048576
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then
        nproc=32768
    fi
    cat > "$OUT/containers.conf" <<EOF
# made by docker/test/run.sh for make docker-test (CONTAINERS_CONF)
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

# netavark and aardvark-dns: the services find each other by name (the
# CNI plugins are not installed)
[network]
network_backend = "netavark"
EOF
    export CONTAINERS_CONF=$OUT/containers.conf
    local got
    got=$(podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} {{.Host.NetworkBackend}}')
    [ "$got" = "runc cgroupfs netavark" ] \
        || fail "podman did not take $CONTAINERS_CONF (runtime, cgroups: $got)"
}

# -- the base image --------------------------------------------------------

# the Debian mirror apt uses: deb822 sources first, then sources.list
apt_mirror() {
    $PYTHON - "$SUITE" <<'EOF'
import glob, re, sys
suite = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        f = {}
        for line in stanza.splitlines():
            m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if m:
                f[m.group(1).lower()] = m.group(2).split()
        if ("deb" in f.get("types", []) and suite in f.get("suites", [])
                and f.get("enabled", ["yes"])[0] != "no" and f.get("uris")):
            print(f["uris"][0])
            sys.exit(0)
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        w = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(w) >= 3 and w[0] == "deb" and w[2] == suite:
            print(w[1])
            sys.exit(0)
sys.exit("no deb source for %s in /etc/apt" % suite)
EOF
}

make_base() {
    if podman image exists "$BASE_IMAGE"; then
        ok "base image $BASE_IMAGE (in podman's storage)"
        return
    fi
    if [ -s "$BASE_TAR" ]; then
        podman load -q -i "$BASE_TAR" >> "$LOG"
        ok "base image $BASE_IMAGE (loaded from $BASE_TAR)"
        return
    fi
    local mirror root t
    mirror=$(apt_mirror)
    root=$OUT/rootfs
    t=$(date +%s.%N)
    rm -rf "$root"
    # the host's package cache: debootstrap checks each .deb it reuses
    debootstrap --variant=minbase --cache-dir=/var/cache/apt/archives \
        "$SUITE" "$root" "$mirror" >> "$LOG" 2>&1 \
        || fail "debootstrap $SUITE from $mirror (log: $LOG)"
    # as the Debian images on registries are: the machine's apt sources
    # (updates and security too), no daemon started by a postinst.
    # (A change here needs the old base gone: podman rmi $BASE_IMAGE and
    # rm $BASE_TAR)
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        rm -f "$root/etc/apt/sources.list"
        cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
    elif [ -f /etc/apt/sources.list ]; then
        grep -E '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list \
            > "$root/etc/apt/sources.list"
    fi
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    # dpkg without a sync per file, as in those images (docker-apt-speedup)
    echo force-unsafe-io > "$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | podman import -q --change 'CMD ["bash"]' - \
        "$BASE_IMAGE" >> "$LOG"
    rm -rf "$root"
    podman save -q -o "$BASE_TAR.tmp" "$BASE_IMAGE" && mv -f "$BASE_TAR.tmp" "$BASE_TAR"
    ok "base image $BASE_IMAGE from $mirror ($(since "$t") s, saved to $BASE_TAR)"
}

# -- the images ------------------------------------------------------------

# build TAG DOCKERFILE CONTEXT [OPTION...]; the image the tag named before
# is removed when it is replaced (a changed source would otherwise leave
# an untagged image behind at each run, about 1 GB for the build stage)
build() {
    local tag=$1 file=$2 ctx=$3 t old
    shift 3
    t=$(date +%s.%N)
    old=$(podman image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    podman build --format docker --build-arg "BASE=$BASE_IMAGE" "$@" \
        -t "$tag" -f "$file" "$ctx" >> "$LOG" 2>&1 \
        || { tail -30 "$LOG"; fail "podman build $tag (log: $LOG)"; }
    if [ -n "$old" ] && [ "$old" != "$(podman image inspect -f '{{.Id}}' "$tag")" ]; then
        podman rmi "$old" >> "$LOG" 2>&1 || true
    fi
    ok "image $tag: $(podman image inspect -f '{{.Size}}' "$tag" \
        | awk '{ printf "%.0f MB", $1 / 1e6 }') ($(since "$t") s)"
}

# -- tearing down ----------------------------------------------------------

teardown() {
    # -v: the anonymous volumes of the images' VOLUMEs too, which
    # "podman-compose down -v" leaves (it removes the project's named ones)
    podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" \
        | xargs -r podman rm -f -v >> "$LOG" 2>&1 || true
    compose down -v >> "$LOG" 2>&1 || true
    # what down leaves: its network; and anything of an interrupted run
    podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" \
        | xargs -r podman volume rm -f >> "$LOG" 2>&1 || true
    podman pod rm -f "pod_$PROJECT" >> "$LOG" 2>&1 || true
    if podman network exists "${PROJECT}_default" 2>/dev/null; then
        podman network rm -f "${PROJECT}_default" >> "$LOG" 2>&1 || true
    fi
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
        for s in gate settle redis upstream prometheus grafana; do
            if podman container exists "$(cname $s)" 2>/dev/null; then
                say "--- $(cname $s), last lines:"
                podman logs --tail 15 "$(cname $s)" 2>&1 | sed 's/^/    /'
            fi
        done
        say "log: $LOG"
    fi
    if [ "${TOLL_DOCKER_KEEP:-0}" = 1 ]; then
        say "TOLL_DOCKER_KEEP=1: left up (podman-compose -p $PROJECT ${COMPOSE_FILES[*]} down -v)"
    else
        teardown
        if [ -n "$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT")" ] \
            || [ -n "$(podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT")" ] \
            || podman network exists "${PROJECT}_default" 2>/dev/null \
            || [ "$(podman volume ls -q | wc -l)" -gt "$VOLUMES_BEFORE" ]; then
            say "FAIL: containers, volumes or the network of $PROJECT are left"
            rc=1
        fi
    fi
    say "docker-test: $([ "$rc" -eq 0 ] && echo passed || echo FAILED) in $(since "$T_START") s"
    exit "$rc"
}

# -- checks ----------------------------------------------------------------

# wait_for SECONDS CMD...: runs CMD every 0.5 s until it succeeds; when
# time is up, shows what its last attempt said
wait_for() {
    local limit=$1 end
    shift
    end=$(( $(date +%s) + limit ))
    until "$@" > "$OUT/attempt.out" 2>&1; do
        if [ "$(date +%s)" -ge "$end" ]; then
            say "     the last attempt of: $*"
            tail -5 "$OUT/attempt.out" | sed 's/^/     | /'
            return 1
        fi
        sleep 0.5
    done
}

# tollctl is given Redis's address, not its name: Debian 12's aardvark-dns
# (1.4) drops queries while it reloads, at each container's start, and was
# seen to answer nothing for "redis" for a minute after "up" (1 run in 3);
# the gate and toll-settle looked their names up at their start, in time
redis_addr() {
    podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' \
        "$(cname redis)"
}

new_key() {
    podman exec "$(cname gate)" tollctl --redis "$(redis_addr):6379" \
        key create --owner "$1" --plan free
}

# status_is URL STATUS [HEADER]
status_is() {
    [ "$(curl -s -o /dev/null -w '%{http_code}' ${3:+-H "$3"} "$1")" = "$2" ]
}

json_field() {      # json_field FIELD < JSON
    $PYTHON -c 'import json, sys
v = json.loads(sys.stdin.read().strip().splitlines()[-1])
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1"
}

# the headers of one call: "NAME: value" lines, names lowercased
call_headers() {
    curl -s -D - -o /dev/null -H "Authorization: Bearer $1" "$GATE/api/hello" \
        | tr -d '\r' | awk 'NR == 1 { print "status: " $2; next }
                            /:/ { i = index($0, ":"); print tolower(substr($0, 1, i - 1)) ":" substr($0, i + 1) }'
}

header() {          # header NAME < headers
    awk -v n="$1" -F': ' '$1 == n { print $2; exit }'
}

ledger_micros() {   # ledger_micros ACCOUNT FIELD
    podman exec "$(cname settle)" tollctl --json --ledger /var/lib/toll/ledger.db \
        ledger balance "$1" | json_field "$2"
}

prom_value() {      # prom_value QUERY: the first sample's value, or nothing
    curl -s "$PROM/api/v1/query" --data-urlencode "query=$1" \
        | $PYTHON -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")'
}

grafana_static() {
    $PYTHON - <<'EOF'
import json, sys, yaml
dash = json.load(open("docs/grafana-toll.json"))
ds = yaml.safe_load(open("docker/grafana/provisioning/datasources/prometheus.yaml"))["datasources"]
prov = yaml.safe_load(open("docker/grafana/provisioning/dashboards/toll.yaml"))["providers"][0]
compose = yaml.safe_load(open("docker/compose.grafana.yaml"))["services"]["grafana"]
default = [d for d in ds if d.get("isDefault")]
assert len(default) == 1, "one default data source"
default = default[0]
assert default["type"] == "prometheus" and default["url"] == "http://prometheus:9090", default
var = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
assert len(var) == 1 and var[0]["query"] == default["type"], var
ref = "${%s}" % var[0]["name"]
uids = set()
def walk(o):
    if isinstance(o, dict):
        d = o.get("datasource")
        if isinstance(d, dict) and "uid" in d:
            uids.add(d["uid"])
        for v in o.values():
            walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
walk(dash)
bad = uids - {ref, default["uid"], "-- Grafana --", "grafana"}
assert not bad, "data sources not provisioned: %s" % bad
assert uids, "the dashboard names no data source"
mounts = [v.split(":")[1] for v in compose["volumes"]]
assert "/var/lib/toll-dashboards/toll.json" in mounts and prov["options"]["path"] == "/var/lib/toll-dashboards", mounts
assert "/etc/grafana/provisioning" in mounts
print("%d panels, data source %s (%s, default), provider path %s"
      % (sum(1 + len(p.get("panels", [])) for p in dash["panels"]),
         default["name"], default["uid"], prov["options"]["path"]))
EOF
}

# -- the run ---------------------------------------------------------------

configure_podman
VOLUMES_BEFORE=0
trap on_exit EXIT
trap 'exit 130' INT TERM
teardown
VOLUMES_BEFORE=$(podman volume ls -q | wc -l)

make_base
T_BUILD=$(date +%s.%N)
# the build stage is tagged: the next run's cache, and what build()
# removes when it is replaced
build localhost/toll-build:latest docker/Dockerfile . --target build
build localhost/toll:latest docker/Dockerfile .
build localhost/toll-redis:latest docker/redis/Dockerfile docker/redis
build localhost/toll-upstream:latest docker/upstream/Dockerfile .
build localhost/toll-prometheus:latest docker/prometheus/Dockerfile docker/prometheus
say "     images built in $(since "$T_BUILD") s"

WITH_GRAFANA=0
if podman image exists "$GRAFANA_IMAGE"; then
    WITH_GRAFANA=1
    COMPOSE_FILES+=(-f docker/compose.grafana.yaml)
fi

T_UP=$(date +%s.%N)
compose up -d >> "$LOG" 2>&1 || fail "podman-compose up (log: $LOG)"
ok "compose up -d returned ($(since "$T_UP") s)"

# a probe buyer's key, then its first 200: the time to the first good answer
wait_for 60 new_key docker-probe || fail "tollctl key create in $(cname gate)"
PROBE=$(new_key docker-probe | json_field token)
wait_for 90 status_is "$GATE/api/hello" 200 "Authorization: Bearer $PROBE" \
    || fail "no 200 from $GATE/api/hello within 90 s"
FIRST=$(since "$T_UP")
ok "first 200 through the gate $FIRST s after up"

# a good key: 4 calls, the first 2 free (free_calls=2), then 0.05 each
KEY=$(new_key docker-test)
TOKEN=$(json_field token <<< "$KEY")
KEY_ID=$(json_field key_id <<< "$KEY")
for n in 1 2 3 4; do
    h=$(call_headers "$TOKEN")
    [ "$(header status <<< "$h")" = 200 ] || fail "call $n: $(header status <<< "$h"), not 200"
    [ -n "$(header x-toll-usage-id <<< "$h")" ] || fail "call $n: no X-Toll-Usage-Id"
    amount=$(header x-toll-amount <<< "$h")
    if [ "$n" -le 2 ]; then
        [ "$amount" = 0 ] && [ "$(header x-toll-free-tier <<< "$h")" = true ] \
            || fail "call $n: free call's headers: amount '$amount', free tier '$(header x-toll-free-tier <<< "$h")'"
    else
        [ "$amount" = 0.05 ] || fail "call $n: X-Toll-Amount '$amount', not 0.05"
    fi
done
ok "good key: 200 x 4 with X-Toll-Usage-Id, X-Toll-Amount 0, 0, 0.05, 0.05"

# a bad secret and no key: 401 problem+json
body=$(curl -s -D "$OUT/h401" -H "Authorization: Bearer $KEY_ID:this-is-not-the-secret" "$GATE/api/hello")
head -1 "$OUT/h401" | grep -q ' 401' || fail "bad secret: $(head -1 "$OUT/h401")"
grep -qi '^content-type: application/problem+json' "$OUT/h401" || fail "bad secret: not problem+json"
[ "$(json_field status <<< "$body")" = 401 ] || fail "bad secret: body $body"
status_is "$GATE/api/hello" 401 || fail "no key: not 401"
ok "bad secret and no key: 401 application/problem+json"

# toll_usage: the meter's flush puts the calls in Redis within a second
usage_calls() {
    curl -s -H "Authorization: Bearer $TOKEN" "$GATE/usage/me" | json_field totals.calls
}
usage_is_4() { [ "$(usage_calls)" = 4 ]; }
wait_for 20 usage_is_4 || fail "toll_usage: $(usage_calls) calls, not 4"
ok "toll_usage: 4 calls for docker-test"

# the ledger: toll-settle drains them (2 paid calls: 0.10, the fee 10%)
buyer_debits() { [ "$(ledger_micros buyer:docker-test debits_micros)" = 100000 ]; }
wait_for 30 buyer_debits || fail "ledger: buyer:docker-test debits $(ledger_micros buyer:docker-test debits_micros 2>&1), not 100000"
[ "$(ledger_micros provider:demo-provider credits_micros)" = 90000 ] \
    || fail "ledger: provider credits $(ledger_micros provider:demo-provider credits_micros)"
[ "$(ledger_micros platform:fees credits_micros)" = 10000 ] \
    || fail "ledger: fees $(ledger_micros platform:fees credits_micros)"
podman exec "$(cname settle)" tollctl --ledger /var/lib/toll/ledger.db ledger check >> "$LOG" 2>&1 \
    || fail "tollctl ledger check"
ok "ledger (tollctl in $(cname settle)): buyer 0.10, provider 0.09, fees 0.01; ledger check passes"

# Prometheus scraped both: the service's passed calls (5: the probe's and
# 4; /usage/me is gated too, but has no service)
PASSED='sum(toll_requests_total{service="hello",decision="passed"})'
prom_passed() { [ "$(prom_value "$PASSED")" = 5 ]; }
prom_settle() { [ "$(prom_value 'up{job="toll-settle"}')" = 1 ]; }
wait_for 60 prom_passed || fail "Prometheus: $PASSED is '$(prom_value "$PASSED")', not 5"
wait_for 60 prom_settle || fail "Prometheus: toll-settle not up"
ok "Prometheus: $PASSED = 5, toll-settle scraped"

# health checks, the users the programs run as, the module's snippet
for s in gate settle redis; do
    wait_for 20 podman healthcheck run "$(cname $s)" \
        || fail "$(cname $s): health check fails"
done
ok "health checks pass: gate, settle, redis"
workers=$(podman top "$(cname gate)" user args | awk '/nginx: worker/ { print $1 }' | sort -u)
[ "$workers" = www-data ] || fail "nginx workers run as '$workers'"
settle_user=$(podman top "$(cname settle)" user args | awk '/toll-settle/ { print $1 }' | sort -u)
[ "$settle_user" = toll ] || fail "toll-settle runs as '$settle_user'"
[ "$(podman exec "$(cname gate)" readlink /etc/nginx/modules-enabled/50-mod-http-toll.conf)" \
    = /usr/share/nginx/modules-available/mod-http-toll.conf ] || fail "no modules-enabled link"
ok "nginx workers run as www-data, toll-settle as toll; modules-enabled/50-mod-http-toll.conf"

# a configuration reload, as docker/README.md says
podman exec "$(cname gate)" nginx -s reload >> "$LOG" 2>&1 || fail "nginx -s reload"
sleep 1
status_is "$GATE/api/hello" 200 "Authorization: Bearer $PROBE" || fail "no 200 after a reload"
ok "nginx -s reload: still 200"

if [ "$WITH_GRAFANA" = 1 ]; then
    grafana_search() {
        curl -sf -u "admin:${TOLL_GRAFANA_PASSWORD:-admin}" "$GRAFANA/api/search?query=toll" \
            | $PYTHON -c 'import json, sys; sys.exit(0 if any(d.get("title") == "toll" for d in json.load(sys.stdin)) else 1)'
    }
    wait_for 90 grafana_search || fail "Grafana's API does not list the dashboard"
    curl -sf -u "admin:${TOLL_GRAFANA_PASSWORD:-admin}" "$GRAFANA/api/datasources/uid/toll-prometheus" > /dev/null \
        || fail "Grafana has no data source toll-prometheus"
    ok "Grafana ($GRAFANA_IMAGE) lists the dashboard toll, data source toll-prometheus"
else
    grafana_static > "$OUT/grafana-static.txt" 2>&1 \
        || { cat "$OUT/grafana-static.txt"; fail "Grafana's provisioning"; }
    ok "Grafana's provisioning checked statically: $(cat "$OUT/grafana-static.txt")"
    say "Grafana not started: no image on this machine (no registry)"
fi

say "     time to first good answer after up: $FIRST s"
