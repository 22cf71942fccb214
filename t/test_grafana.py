"""docs/grafana-toll.json, the Grafana dashboard: it loads, it is built
only on metrics toll and toll-settle export, and it can be imported into
any Grafana (no data source uid of ours written in it).

No Grafana runs here: the file is checked as Grafana reads it (panels in
rows, targets, templating), and, when promtool is installed, every query
is parsed as PromQL with the dashboard's variables filled in.
"""

import json
import os
import re
import subprocess

import pytest

from helpers.metrics import GATE_FAMILIES


HERE = os.path.dirname(os.path.abspath(__file__))
DASHBOARD = os.path.join(os.path.dirname(HERE), "docs", "grafana-toll.json")

# what toll-settle exports (docs/settle.md)
SETTLE_FAMILIES = {
    "toll_settle_batches_total": "counter",
    "toll_settle_drained_micros_total": "counter",
    "toll_settle_balance_alerts_total": "counter",
    "toll_settle_drain_lag_seconds": "gauge",
    "toll_settle_errors_total": "counter",
    "toll_settle_webhook_deliveries_total": "counter",
    "toll_settle_ledger_debits_micros": "gauge",
    "toll_settle_ledger_credits_micros": "gauge",
}


def allowed_names():
    names = set()
    for name, kind in list(GATE_FAMILIES.items()) + list(
            SETTLE_FAMILIES.items()):
        names.add(name)
        if kind == "histogram":
            names |= {name + s for s in ("_bucket", "_sum", "_count")}
    return names


NAME_RE = re.compile(r"toll_[a-z_]+")
VAR_RE = re.compile(r"^\$\{?(\w+)\}?$")


@pytest.fixture(scope="module")
def dash():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def all_panels(dash):
    """Every panel, those inside rows included (collapsed rows keep theirs
    in "panels")."""
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def data_panels(dash):
    return [p for p in all_panels(dash) if p.get("type") != "row"]


def exprs(dash):
    """(where, expr) for every query: panel targets and query variables."""
    out = []
    for p in data_panels(dash):
        for t in p.get("targets", []):
            out.append(("panel %r %s" % (p.get("title"), t.get("refId")),
                        t.get("expr", "")))
    for v in dash["templating"]["list"]:
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else q or ""
            out.append(("variable %r" % v["name"], q))
            if v.get("definition"):
                out.append(("variable %r definition" % v["name"],
                            v["definition"]))
    return out


def datasource_refs(node, path="$"):
    """(path, value) of every "datasource" field anywhere in the JSON."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                out.append((path + "." + k, v))
            out.extend(datasource_refs(v, path + "." + k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(datasource_refs(v, "%s[%d]" % (path, i)))
    return out


# ------------------------------------------------------------------ tests


def test_parses_as_a_dashboard(dash):
    assert dash["title"]
    assert dash["schemaVersion"] >= 36
    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat: %r" % ids
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        assert g["h"] > 0 and g["y"] >= 0, p["title"]
    for p in data_panels(dash):
        assert p.get("targets"), "panel %r has no query" % p.get("title")
        for t in p["targets"]:
            assert t.get("expr", "").strip(), (p["title"], t)
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), (p["title"], refs)


def test_queries_use_only_exported_metrics(dash):
    ok = allowed_names()
    found = set()
    bad = []
    for where, expr in exprs(dash):
        names = set(NAME_RE.findall(expr))
        assert names, "%s names no toll metric: %r" % (where, expr)
        found |= names
        bad += ["%s: %s" % (where, n) for n in sorted(names - ok)]
    assert not bad, "metrics nothing exports:\n" + "\n".join(bad)
    # the panels the dashboard is for
    for name in ("toll_requests_total", "toll_billed_micros_total",
                 "toll_request_duration_seconds_bucket",
                 "toll_redis_reply_duration_seconds_bucket",
                 "toll_redis_up", "toll_responses_total",
                 "toll_key_cache_hits_total", "toll_zone_used_bytes",
                 "toll_meter_backlog", "toll_settle_drain_lag_seconds",
                 "toll_settle_errors_total",
                 "toll_settle_webhook_deliveries_total"):
        assert name in found, "no panel uses %s" % name


def test_latency_quantiles_from_histogram_buckets(dash):
    """p50 and p99 of both histograms, as histogram_quantile over 5m rates
    of the buckets, aggregated by le (a quantile per label set is wrong)."""
    all_exprs = [e for _, e in exprs(dash)]
    for hist in ("toll_request_duration_seconds",
                 "toll_redis_reply_duration_seconds"):
        for q in ("0.5", "0.99"):
            pat = re.compile(
                r"histogram_quantile\(\s*%s\s*,\s*sum by \(([^)]*)\)\s*"
                r"\(rate\(%s_bucket(\{[^}]*\})?\[5m\]\)\)\)"
                % (re.escape(q), hist))
            m = [pat.search(e) for e in all_exprs]
            m = [x for x in m if x]
            assert m, "no p%s of %s" % (q, hist)
            assert all("le" in [s.strip() for s in x.group(1).split(",")]
                       for x in m), m


def test_no_hard_coded_datasource_uid(dash):
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds_vars = {n for n, v in variables.items() if v["type"] == "datasource"}
    assert ds_vars, "no data source variable"
    for n in ds_vars:
        assert variables[n]["query"] == "prometheus"
        assert not variables[n].get("current"), (
            "variable %s remembers a data source" % n)
    refs = datasource_refs(dash)
    assert refs
    for path, ref in refs:
        if isinstance(ref, dict) and ref.get("type") == "grafana":
            continue            # the built-in annotations
        assert isinstance(ref, dict), "%s: %r" % (path, ref)
        m = VAR_RE.match(str(ref.get("uid", "")))
        assert m and m.group(1) in ds_vars, (
            "%s: uid %r is not a data source variable" % (path, ref))
    # every panel says which data source it queries
    for p in data_panels(dash):
        assert "datasource" in p, p["title"]


def test_service_variable(dash):
    v = {x["name"]: x for x in dash["templating"]["list"]}["service"]
    q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
    assert re.sub(r"\s", "", q) == "label_values(toll_requests_total,service)"
    assert v["multi"] is True and v["includeAll"] is True
    # "All" must match the empty service of gated locations without one
    assert re.fullmatch(v["allValue"], "")
    # the panels on gate traffic follow it
    uses = [e for _, e in exprs(dash) if '"$service"' in e]
    assert any("toll_requests_total" in e for e in uses)
    assert any("toll_billed_micros_total" in e for e in uses)


def test_queries_parse_as_promql(dash, tmp_path):
    """promtool parses every query, with the variables filled in as
    Grafana would."""
    rules = []
    for i, (where, expr) in enumerate(exprs(dash)):
        if expr.startswith("label_values("):
            continue            # a Grafana function, not PromQL
        expr = (expr.replace("$__rate_interval", "1m")
                .replace("$service", ".*"))
        rules.append({"record": "toll:check_%d" % i, "expr": expr})
    path = tmp_path / "rules.json"
    # JSON is YAML: promtool reads it as a rule file
    path.write_text(json.dumps({"groups": [{"name": "grafana-toll",
                                            "rules": rules}]}))
    r = subprocess.run(["promtool", "check", "rules", str(path)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
