#!/usr/bin/python3
"""The module's own instructions per request, counted by callgrind.

    benchmarks/callgrind.py [--requests N] [--annotate] BUILD_DIR
                                                    (make bench-callgrind)

Runs nginx as a single process under valgrind --tool=callgrind, with
collection switched on only inside the module's entry points (the access
handler, the Redis reply callback, the request cleanup).  After a warm-up
that puts the key in the cache, the counters are zeroed; then N requests
with the cached key go through one keep-alive connection.  Instructions
are counted, not timed: the figure is the same on a busy machine, so it
can be compared across commits.

DESIGN's promise: <= 5,000 instructions per request on the cached path.

Stdlib only; needs valgrind (callgrind_control) and redis-server.
"""

import argparse
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

# entry points from nginx into the module; callees are counted with them
ENTRY_POINTS = (
    "ngx_http_toll_access_handler",
    "ngx_http_toll_auth_on_reply",
    "ngx_http_toll_cleanup",
)

WARMUP = 20

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

    upstream backend {{ server 127.0.0.1:{up_port}; keepalive 4; }}

    server {{
        listen 127.0.0.1:{port};
        location /toll/ {{
            toll on;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen 127.0.0.1:{up_port};
        location / {{ return 200 "ok"; }}
    }}
}}
"""


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


def run_requests(port, n, token):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": "Bearer " + token}
    for _ in range(n):
        conn.request("GET", "/toll/x", headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            sys.exit("callgrind: got %d, not 200: the gate is not "
                     "passing the key" % resp.status)
    conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--annotate", action="store_true",
                    help="also print the functions the instructions went "
                         "to (the warm-up is then counted too)")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    module = os.path.join(build, "ngx_http_toll_module.so")
    tollctl = os.path.join(build, "tollctl")
    for path in (module, tollctl, VALGRIND, CALLGRIND_CONTROL):
        if not os.path.exists(path):
            sys.exit("callgrind: %s not found (make, apt-get install "
                     "valgrind)" % path)

    prefix = tempfile.mkdtemp(prefix="toll-callgrind-")
    os.makedirs(os.path.join(prefix, "tmp"))
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
             "create", "--owner", "bench", "--plan", "pro"],
            check=True, capture_output=True, text=True).stdout)

        port, up_port = free_port(), free_port()
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(module=module, prefix=prefix, port=port,
                                up_port=up_port, redis_port=redis_port,
                                user="user root;" if os.geteuid() == 0
                                else ""))

        out = os.path.join(prefix, "callgrind.out")
        argv = [VALGRIND, "--tool=callgrind", "--callgrind-out-file=" + out]
        argv += ["--toggle-collect=" + f for f in ENTRY_POINTS]
        argv += [NGINX, "-p", prefix, "-c", conf, "-e",
                 os.path.join(prefix, "error.log")]
        ngx = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        procs.append(ngx)
        wait_port(port, ngx, "nginx under valgrind")

        run_requests(port, WARMUP, key["token"])        # fills the cache
        counted = args.requests

        # zeroing loses the call graph callgrind_annotate needs: with
        # --annotate the warm-up (one Redis lookup) is counted as well
        if args.annotate:
            counted += WARMUP
        else:
            subprocess.run([CALLGRIND_CONTROL, "--zero", str(ngx.pid)],
                           check=True, capture_output=True)

        run_requests(port, args.requests, key["token"])

        ngx.send_signal(signal.SIGQUIT)
        ngx.wait(timeout=120)

        totals = None
        for path in glob.glob(out + "*"):
            with open(path) as f:
                m = re.search(r"^(?:totals|summary): (\d+)", f.read(), re.M)
                if m:
                    totals = max(totals or 0, int(m.group(1)))
        if totals is None:
            sys.exit("callgrind: no totals in %s" % out)

        if args.annotate:
            for path in glob.glob(out + "*"):
                print(subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
                                     capture_output=True, text=True).stdout)

        per_request = totals / counted
        print("module instructions per request (cached key, %d requests): "
              "%.0f (target <= 5000)" % (args.requests, per_request))
        print("RESULT instructions_per_request=%.0f" % per_request)

    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    main()
