"""nginx.conf for a test: everything inside the test's prefix."""

import os


TOLL_LOG_FORMAT = ("tag=$http_x_test_tag|status=$status"
                   "|auth=$toll_auth_status|key=$toll_key_id"
                   "|buyer=$toll_buyer|plan=$toll_plan|uri=$uri"
                   "|rid=$request_id")

TEMPLATE = """\
# written by t/conftest.py for one test
{load_module}
{user}
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/logs/nginx.pid;
lock_file {prefix}/logs/nginx.lock;
error_log {prefix}/logs/error.log {error_log_level};
{main_extra}

events {{
    worker_connections 1024;
}}

http {{
    access_log {prefix}/logs/access.log;
{toll_log}
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path       {prefix}/tmp/proxy;
    fastcgi_temp_path     {prefix}/tmp/fastcgi;
    uwsgi_temp_path       {prefix}/tmp/uwsgi;
    scgi_temp_path        {prefix}/tmp/scgi;

    default_type application/octet-stream;

    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 16;
    }}

{toll_http}
{http_extra}

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
{server_extra}
{locations}
    }}
}}
"""


def make_prefix(prefix):
    for d in ("conf", "logs", "tmp", "html"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)


def render(prefix, port, upstream_port, module_path=None, workers=2,
           toll_http="", http_extra="", server_extra="", locations="",
           main_extra="", toll_log=False, error_log_level="info"):
    load = "load_module %s;" % module_path if module_path else ""
    user = "user root;" if os.geteuid() == 0 else ""
    tl = ""
    if toll_log:
        tl = ("    log_format tollvars '%s';\n"
              "    access_log %s/logs/toll.log tollvars;\n"
              % (TOLL_LOG_FORMAT, prefix))
    return TEMPLATE.format(
        load_module=load, user=user, workers=workers, prefix=prefix,
        main_extra=main_extra, toll_log=tl, upstream_port=upstream_port,
        toll_http=toll_http, http_extra=http_extra, port=port,
        server_extra=server_extra, locations=locations,
        error_log_level=error_log_level)
