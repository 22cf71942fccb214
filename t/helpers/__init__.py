"""Test helpers for toll's integration suites.

    procs     redis-server and nginx under test control
    upstream  a counting HTTP/1.1 stand-in for the API behind the gate
    client    a raw-socket HTTP client that sends bytes as given
    keys      key records: through tollctl or written directly
"""
