"""The metric families toll exports, with their types: the one list the
metrics, Grafana and docs tests check against."""

# the gate's (toll_metrics; docs/metrics.md), in the order it writes them
GATE_FAMILIES = {
    "toll_build_info": "gauge",
    "toll_requests_total": "counter",
    "toll_responses_total": "counter",
    "toll_upstream_errors_total": "counter",
    "toll_metered_calls_total": "counter",
    "toll_billed_micros_total": "counter",
    "toll_request_duration_seconds": "histogram",
    "toll_redis_commands_total": "counter",
    "toll_redis_errors_total": "counter",
    "toll_redis_reconnects_total": "counter",
    "toll_redis_up": "gauge",
    "toll_redis_reply_duration_seconds": "histogram",
    "toll_meter_backlog": "gauge",
    "toll_limit_sync_backlog": "gauge",
    "toll_key_cache_hits_total": "counter",
    "toll_key_cache_misses_total": "counter",
    "toll_zone_used_bytes": "gauge",
    "toll_zone_free_bytes": "gauge",
    "toll_workers": "gauge",
    "toll_prepaid_lease_micros": "gauge",
    "toll_prepaid_holding_micros": "gauge",
    "toll_prepaid_unflushed_micros": "gauge",
    "toll_prepaid_balances": "gauge",
    "toll_prepaid_unsure": "gauge",
    "toll_cap_lease_micros": "gauge",
    "toll_cap_leases": "gauge",
    "toll_cap_asking": "gauge",
    "toll_cap_generation": "gauge",
}
