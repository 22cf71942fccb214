"""What fuzz_settle_claim found in toll-settle's reading of a claim
(t/fuzz/README.md), as integration tests.

A claim whose content the ledger refuses (a negative count, a provider
that is not printable ASCII) made toll_settle_post() return EX_SOFTWARE:
toll-settle exited, and every restart met the same claim in
toll:drain:open again, so no buyer settled any more.  The first is what
the meter itself wrote when a call's correction was flushed after the
call was drained (PITFALLS.md, "Negative corrections after a drain").
Such a claim is now set aside in quarantine (docs/settle.md).
"""

import pytest

from helpers.settle import (Settle, add_into, day, ledger_usage, usage_key,
                            write_usage)

@pytest.fixture
def settle(redis_server, tmp_path):
    s = Settle(redis_server, tmp_path / "ledger.db")
    yield s
    s.close()


@pytest.mark.parametrize("fields", [
    # the correction of a drained call, as the meter flushes it
    {"svc:provider": "acme", "svc:calls": "-1", "svc:paid_calls": "-1",
     "svc:amount_micros": "-50000"},
    # a provider the ledger refuses
    {"svc:provider": "\u00e9t\u00e9", "svc:calls": "1"},
], ids=["negative_correction", "provider_not_ascii"])
def test_one_claim_does_not_stop_the_drain(settle, redis_server, fields):
    rc = redis_server.client
    want = {}
    add_into(want, ("good", day(), "svc"),
             write_usage(rc, "good", "svc", "acme", calls=2))
    bad = usage_key("bad", day())
    rc.hset(bad, mapping=fields)
    rc.sadd("toll:usage:index", bad)
    for _ in range(2):
        p = settle.once()
        assert p.returncode == 0, p.stderr
    assert ledger_usage(settle.ledger) == want
    assert rc.hlen("toll:drain:quarantine") == 1
