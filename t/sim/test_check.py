"""The simulation's checker on made-up runs: it must pass what the rule
allows and fail what it does not (no processes; t/sim/check.py alone)."""

import check

FIELDS = check.FIELDS


class Inst:
    def __init__(self, kills=()):
        self.kills = list(kills)


def call(cid, service, kind="normal", instance=0, buyer="b", t0=10.0,
         t1=10.1, method="GET", path=None, status=200):
    return {"id": cid, "kind": kind, "instance": instance, "buyer": buyer,
            "service": service, "method": method,
            "path": path or "/%s/x" % service, "status": status,
            "t0": t0, "t1": t1}


def hit(c, status=200, latency=0.01):
    return {"id": c["id"], "buyer": c["buyer"], "service": c["service"],
            "method": c["method"], "path": c["path"], "status": status,
            "latency": latency}


def usage(provider, **kw):
    rec = dict({f: 0 for f in FIELDS}, providers={provider})
    rec.update(kw)
    return rec


def run(outcomes, records, meter, ledger=None, instances=None):
    instances = instances or [Inst(), Inst()]
    exp, anomalies = check.expectations(outcomes, records, instances)
    rep = check.Report()
    check.compare(rep, exp, meter, meter if ledger is None else ledger)
    return anomalies, {name for name, _ in rep.failed}


METER_OK = "upstream = meter, per buyer and service (calls, errors, " \
           "charged, amount to the micro-unit)"
LEDGER_OK = "meter = ledger, per buyer and service (every field)"
FREE_OK = "no buyer got more than free_calls free calls"


def test_exact_calls_errors_routes_and_charged_errors():
    a = call("1", "api")
    b = call("2", "api")
    d = call("3", "data", method="POST", path="/data/bulk")
    e = call("4", "err")
    recs = [hit(a), hit(b, 503), hit(d), hit(e, 500)]
    meter = {
        ("b", "api"): usage("acme", calls=2, paid_calls=1, errors=1,
                            amount_micros=50000),
        ("b", "data"): usage("globex", calls=1, paid_calls=1,
                             amount_micros=500000),
        # toll_charge_errors on: the 500 is charged
        ("b", "err"): usage("initech", calls=1, paid_calls=1, errors=1,
                            amount_micros=20000),
    }
    assert run([a, b, d, e], recs, meter) == ([], set())
    # the 503 charged after all: caught
    bad = dict(meter)
    bad[("b", "api")] = usage("acme", calls=2, paid_calls=2, errors=1,
                              amount_micros=100000)
    assert METER_OK in run([a, b, d, e], recs, bad)[1]
    # the route's price missed: caught
    bad = dict(meter)
    bad[("b", "data")] = usage("globex", calls=1, paid_calls=1,
                               amount_micros=123)
    assert METER_OK in run([a, b, d, e], recs, bad)[1]


def test_a_call_the_upstream_never_saw_counts_nothing():
    a = call("1", "api", kind="body_abandoned", status=None)
    assert run([a], [], {}) == ([], set())
    meter = {("b", "api"): usage("acme", calls=1, paid_calls=1,
                                 amount_micros=50000)}
    assert METER_OK in run([a], [], meter)[1]


def test_a_call_caught_by_a_worker_kill_may_count_once_at_the_gate():
    a = call("1", "api", status=None)
    b = call("2", "api", status=None)
    kills = [Inst([(10.05, 10.2)]), Inst()]
    one = {("b", "api"): usage("acme", calls=1, paid_calls=1,
                               amount_micros=50000)}
    assert run([a], [], {}, instances=kills)[1] == set()
    assert run([a], [], one, instances=kills)[1] == set()
    # two calls counted for one caught call: not allowed
    two = {("b", "api"): usage("acme", calls=2, paid_calls=2,
                               amount_micros=100000)}
    assert METER_OK in run([a], [], two, instances=kills)[1]
    # a kill on the other instance covers nothing
    other = [Inst(), Inst([(10.05, 10.2)])]
    assert METER_OK in run([a], [], one, instances=other)[1]
    # a kill long after the call covers nothing
    late = [Inst([(20.0, 20.1)]), Inst()]
    assert METER_OK in run([a], [], one, instances=late)[1]
    # two caught calls: 0, 1 or 2 counted
    assert run([a, b], [], two, instances=kills)[1] == set()


def test_a_caught_5xx_may_stay_charged_but_nothing_else():
    a = call("1", "api", status=None)
    recs = [hit(a, 502)]
    kills = [Inst([(10.05, 10.2)]), Inst()]
    rule = {("b", "api"): usage("acme", calls=1, errors=1)}
    gate = {("b", "api"): usage("acme", calls=1, paid_calls=1,
                                amount_micros=50000)}
    assert run([a], recs, rule, instances=kills)[1] == set()
    assert run([a], recs, gate, instances=kills)[1] == set()
    # without the kill only the rule holds
    assert METER_OK in run([a], recs, gate)[1]
    # received, so it cannot have been left out
    assert METER_OK in run([a], recs, {}, instances=kills)[1]


def test_free_tier_never_more_than_free_calls():
    calls = [call(str(i), "free") for i in range(25)]
    recs = [hit(c) for c in calls]
    ok = {("b", "free"): usage("acme", calls=25, free_calls=20,
                               paid_calls=5, amount_micros=5 * 13000)}
    assert run(calls, recs, ok)[1] == set()
    fewer = {("b", "free"): usage("acme", calls=25, free_calls=15,
                                  paid_calls=10, amount_micros=10 * 13000)}
    assert run(calls, recs, fewer)[1] == set()
    more = {("b", "free"): usage("acme", calls=25, free_calls=21,
                                 paid_calls=4, amount_micros=4 * 13000)}
    assert FREE_OK in run(calls, recs, more)[1]
    wrong_amount = {("b", "free"): usage("acme", calls=25, free_calls=20,
                                         paid_calls=5, amount_micros=1)}
    assert METER_OK in run(calls, recs, wrong_amount)[1]


def test_the_ledger_must_hold_the_meter_exactly():
    a = call("1", "api")
    meter = {("b", "api"): usage("acme", calls=1, paid_calls=1,
                                 amount_micros=50000, latency_ms=3)}
    ledger = {("b", "api"): usage("acme", calls=1, paid_calls=1,
                                  amount_micros=50000, latency_ms=2)}
    assert run([a], [hit(a)], meter, ledger)[1] == {LEDGER_OK}


def test_anomalies_twice_wrong_buyer_wrong_location():
    a = call("1", "tf", kind="try_files")
    twice = run([a], [hit(a), hit(a)], {("b", "tf"): usage(
        "umbrella", calls=1, paid_calls=1, amount_micros=11000)})[0]
    assert any("2 times" in x for x in twice)
    other = dict(hit(a), buyer="c")
    assert any("as buyer" in x for x in run([a], [other], {})[0])
    elsewhere = dict(hit(a), service="nm")
    assert any("from the location of nm" in x
               for x in run([a], [elsewhere], {})[0])


def test_an_answer_after_the_read_timeout_is_nginx_504():
    a = call("1", "api")
    late = [hit(a, 200, latency=3.0)]
    err = {("b", "api"): usage("acme", calls=1, errors=1)}
    paid = {("b", "api"): usage("acme", calls=1, paid_calls=1,
                                amount_micros=50000)}
    assert run([a], late, err)[1] == set()
    assert METER_OK in run([a], late, paid)[1]
    # at the timeout itself the upstream cannot tell: either
    hair = [hit(a, 200, latency=2.0)]
    assert run([a], hair, err)[1] == set()
    assert run([a], hair, paid)[1] == set()
