"""After the run: what the upstream received, what the meter holds, what
the ledger holds, and whether they agree.

The rule (docs/metering.md): a call is metered when it passed the gate in
a location with a service and nginx sent it upstream; it counts one call,
an error when the answer was a 5xx (the upstream's, or nginx's 504 when
the upstream did not answer in time), and it is charged unless it was an
error and the location does not have toll_charge_errors on.  A charged
call is free while the buyer has free calls of the service left (never
more than free_calls), else it costs the price of its route or service.

So per buyer and service, from the upstream's records alone:

    calls   = calls the upstream received from a priced location
    errors  = those it answered 5xx or let time out
    charged = calls - errors (all calls, with toll_charge_errors on)
    amount  = sum of the prices of the charged calls (services without
              a free tier), or paid_calls x price (the free tier's)

and the meter must hold exactly that, and the ledger exactly the meter.

The one promised difference (metering.md, "Exactly once"): a worker
SIGKILLed with calls in flight.  Such a call was counted when it passed
the gate, as a charged call, and the end-of-request correction died with
the worker: a call the upstream answered 5xx stays charged, and a call
caught between the gate and the upstream stays counted though the
upstream never saw it.  Each call whose instance lost a worker while the
call was open (with a margin) is therefore given two possible outcomes,
its rule outcome and its gate-time one; the meter must be reachable by
one choice per such call, and the choices it took are reported.  Calls
the upstream answered within a hair of proxy_read_timeout get the same
treatment (the upstream cannot tell whether nginx had given up).
"""

import collections
import re
import sqlite3

from cluster import PROXY_READ_TIMEOUT_S, SERVICES, price_of

KILL_MARGIN_S = 0.5
# aborts and abandoned bodies go on in nginx after the client is gone
KILL_MARGIN_LATE_S = 1.5
TIMEOUT_HAIR_S = (0.2, 0.5)
DP_STATES_MAX = 200000

USAGE_RE = re.compile(r"^toll:usage:\{(?P<buyer>.*)\}:(?P<day>\d{8})"
                      r"(?P<drained>:drained)?$")
FIELDS = ("calls", "free_calls", "paid_calls", "errors", "amount_micros",
          "latency_ms")


# ------------------------------------------------------------- upstream

def _rule(rec, service):
    status = rec["status"]
    err = status is None or status >= 500
    charged = (not err) or SERVICES[service][3]
    price = price_of(service, rec["method"], rec["path"])
    return (1, int(err), int(charged), price if charged else 0)


def _gate(price):
    """What a call counts for at the gate: one charged call at its
    price (free or paid, the free tier decides)."""
    return (1, 0, 1, price)


ZERO = (0, 0, 0, 0)


def expectations(outcomes, records, instances):
    """{(buyer, service): {"fixed": [calls, errors, charged, amount],
    "options": [[tuple, tuple]...]}}, and a list of
    anomalies (a call received twice, by the wrong location, unknown)."""
    by_id = collections.defaultdict(list)
    anomalies = []
    for r in records:
        if r["service"] == "-":
            continue                    # the unpriced hop of X-Accel
        if r["service"] not in SERVICES:
            anomalies.append("upstream: a request from no known location:"
                             " %r" % r)
            continue
        by_id[r["id"]].append(r)
    known = set()
    exp = {}

    def slot(buyer, service):
        return exp.setdefault((buyer, service), {
            "fixed": [0, 0, 0, 0], "options": []})

    for o in outcomes:
        known.add(o["id"])
        recs = by_id.get(o["id"], [])
        caught = _caught(o, instances)
        if len(recs) > 1:
            anomalies.append("call %s (%s) reached the upstream %d times"
                             % (o["id"], o["kind"], len(recs)))
        for r in recs:
            if r["buyer"] != o["buyer"]:
                anomalies.append("call %s of %s reached the upstream as "
                                 "buyer %r" % (o["id"], o["buyer"],
                                               r["buyer"]))
            if r["service"] != o["service"]:
                anomalies.append("call %s (%s) for %s reached the upstream "
                                 "from the location of %s" % (
                                     o["id"], o["kind"], o["service"],
                                     r["service"]))
        svc = o["service"]
        s = slot(o["buyer"], svc)
        if recs:
            r = recs[0]
            opts = [_rule(r, svc)]
            lat = r.get("latency")
            if lat is not None and r["status"] is not None \
                    and r["status"] < 500:
                # answered after nginx's proxy_read_timeout: nginx had
                # answered 504; within a hair of it, either
                timed_out = _rule(dict(r, status=504), svc)
                if lat > PROXY_READ_TIMEOUT_S + TIMEOUT_HAIR_S[1]:
                    opts = [timed_out]
                elif lat >= PROXY_READ_TIMEOUT_S - TIMEOUT_HAIR_S[0]:
                    opts.append(timed_out)
            if caught:
                opts.append(_gate(price_of(svc, r["method"], r["path"])))
        else:
            opts = [ZERO]
            if caught:
                opts.append(_gate(price_of(svc, o["method"] or "GET",
                                           o["path"] or "/")))
        # the outcome by the rule first, then the other possible ones
        opts = [t for i, t in enumerate(opts) if t not in opts[:i]]
        if len(opts) == 1:
            (t,) = opts
            for i in range(4):
                s["fixed"][i] += t[i]
        else:
            s["options"].append(opts)
    for i, recs in by_id.items():
        if i not in known:
            anomalies.append("upstream: %d request(s) with unknown call id "
                             "%r" % (len(recs), i))
    return exp, anomalies


def reachable(e, free_service):
    """The set of (calls, errors, charged, amount) the options can add to
    the fixed part; amount left at 0 for a free-tier service (its amount
    is checked as paid_calls x price)."""
    states = {tuple(e["fixed"])}
    for opts in e["options"]:
        nxt = set()
        for st in states:
            for t in opts:
                nxt.add((st[0] + t[0], st[1] + t[1], st[2] + t[2],
                         st[3] + t[3]))
        states = nxt
        if len(states) > DP_STATES_MAX:
            return None
    if free_service:
        states = {(c, e_, ch, 0) for c, e_, ch, _ in states}
    return states


# ---------------------------------------------------------------- meter

def meter(rc):
    """What the meter recorded, from Redis: the usage hashes not yet
    drained plus the mirrors of what toll-settle drained, per (buyer,
    service): the fields summed over days, and the providers seen."""
    out = {}
    for name in rc.scan_iter(match="toll:usage:*", count=1000):
        m = USAGE_RE.match(name)
        if not m:
            continue
        for field, value in rc.hgetall(name).items():
            svc, _, what = field.rpartition(":")
            rec = out.setdefault((m.group("buyer"), svc), dict(
                {f: 0 for f in FIELDS}, providers=set()))
            if what in FIELDS:
                rec[what] += int(value)
            elif what == "provider":
                rec["providers"].add(value)
    return out


def ledger(path):
    """{(buyer, service): fields + providers} of the usage transactions."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
    try:
        out = {}
        for row in db.execute(
                "SELECT buyer, service, provider, sum(calls),"
                " sum(free_calls), sum(paid_calls), sum(errors),"
                " sum(amount_micros), sum(latency_ms) FROM transactions"
                " WHERE kind = 'usage' GROUP BY buyer, service, provider"):
            rec = out.setdefault((row[0], row[1]), dict(
                {f: 0 for f in FIELDS}, providers=set()))
            rec["providers"].add(row[2])
            for f, v in zip(("calls", "free_calls", "paid_calls", "errors",
                             "amount_micros", "latency_ms"), row[3:]):
                rec[f] += v
        return out
    finally:
        db.close()


# ---------------------------------------------------------------- check

class Report:
    def __init__(self):
        self.passed = []
        self.failed = []
        self.notes = []

    def check(self, name, ok, detail=""):
        (self.passed if ok else self.failed).append((name, detail))
        return ok

    def note(self, line):
        self.notes.append(line)


def compare(report, exp, met, led):
    pairs = sorted(set(exp) | set(met) | set(led))
    bad_meter, bad_ledger, bad_free, bad_provider = [], [], [], []
    figures = collections.Counter()
    for k in pairs:
        buyer, svc = k
        e = exp.get(k, {"fixed": [0, 0, 0, 0], "options": []})
        m = met.get(k, dict({f: 0 for f in FIELDS}, providers=set()))
        lg = led.get(k, dict({f: 0 for f in FIELDS}, providers=set()))
        if svc not in SERVICES:
            bad_meter.append("%s: a service no location sells: %r" % (k, m))
            continue
        provider, price, free_max, _ = SERVICES[svc]
        free_service = free_max > 0
        charged = m["free_calls"] + m["paid_calls"]
        got = (m["calls"], m["errors"], charged,
               0 if free_service else m["amount_micros"])
        states = reachable(e, free_service)
        figures["uncertain"] += len(e["options"])
        figures["meter_calls"] += m["calls"]
        figures["meter_amount"] += m["amount_micros"]
        figures["ledger_calls"] += lg["calls"]
        figures["ledger_amount"] += lg["amount_micros"]
        if states is None:
            report.note("%s: too many uncertain calls to enumerate (%d)"
                        % (k, len(e["options"])))
            ok = got[0] >= e["fixed"][0]
        else:
            ok = got in states
        if not ok:
            lo = e["fixed"]
            bad_meter.append(
                "%s/%s: meter calls=%d errors=%d charged=%d amount=%d;"
                " upstream says calls=%d errors=%d charged=%d amount=%s"
                "%s" % (buyer, svc, m["calls"], m["errors"], charged,
                        m["amount_micros"], lo[0], lo[1], lo[2],
                        "paid x price" if free_service else lo[3],
                        (" (+%d calls a killed worker may have counted at"
                         " the gate)" % len(e["options"]))
                        if e["options"] else ""))
        elif e["options"]:
            base = [e["fixed"][i] + sum(o[0][i] for o in e["options"])
                    for i in range(3)]
            dev = [got[i] - base[i] for i in range(3)]
            figures["gate_outcomes"] += abs(dev[0]) + abs(dev[1])
            if any(dev):
                report.note(
                    "%s/%s: of %d call(s) open at a worker kill (or "
                    "answered at the read timeout), the meter kept the "
                    "gate's count against the upstream's outcome: %+d "
                    "calls, %+d errors, %+d charged" % (
                        buyer, svc, len(e["options"]), dev[0], dev[1],
                        dev[2]))
        if free_service and m["amount_micros"] != m["paid_calls"] * price:
            bad_meter.append("%s/%s: amount %d != paid_calls %d x price %d"
                             % (buyer, svc, m["amount_micros"],
                                m["paid_calls"], price))
        if m["free_calls"] > free_max or m["free_calls"] < 0:
            bad_free.append("%s/%s: %d free calls (free_calls=%d)"
                            % (buyer, svc, m["free_calls"], free_max))
        if free_service:
            figures["free_given"] += m["free_calls"]
        if m["calls"] and m["providers"] != {provider}:
            bad_provider.append("%s/%s: meter providers %r, expected %r"
                                % (buyer, svc, m["providers"], provider))
        if lg["calls"] and lg["providers"] != {provider}:
            bad_provider.append("%s/%s: ledger providers %r, expected %r"
                                % (buyer, svc, lg["providers"], provider))
        mf = {f: m[f] for f in FIELDS}
        lf = {f: lg[f] for f in FIELDS}
        if mf != lf:
            bad_ledger.append("%s/%s: meter %r, ledger %r" % (buyer, svc,
                                                              mf, lf))
    report.check("upstream = meter, per buyer and service (calls, errors,"
                 " charged, amount to the micro-unit)", not bad_meter,
                 "\n".join(bad_meter))
    report.check("meter = ledger, per buyer and service (every field)",
                 not bad_ledger, "\n".join(bad_ledger))
    report.check("no buyer got more than free_calls free calls",
                 not bad_free, "\n".join(bad_free))
    report.check("one provider per service, as configured",
                 not bad_provider, "\n".join(bad_provider))
    return figures


def _micros(text):
    """"0.05" -> 50000; None for what is not an amount ("-", "")."""
    whole, _, frac = (text or "").partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) \
            or len(frac) > 6:
        return None
    return int(whole) * 1000000 + int((frac + "000000")[:6])


def _caught(o, instances):
    late = o["kind"] in ("abort", "body_abandoned")
    margin = KILL_MARGIN_LATE_S if late else KILL_MARGIN_S
    return any(k0 <= o["t1"] + margin and k1 >= o["t0"] - KILL_MARGIN_S
               for k0, k1 in instances[o["instance"]].kills)


def per_kind(outcomes, records, sim_logs, instances):
    """Diagnosis, not an invariant: per call kind, how many calls the
    upstream received, how many of those nginx's access log shows with
    another service than the one of the location that sent them ("not
    priced"), and how many calls the log (the per-call usage log of
    metering.md, $toll_amount) shows with another amount than the rule
    charges ("log amount off"; calls open at a worker kill left out)."""
    by_id = {}
    for r in records:
        if r["service"] in SERVICES:
            by_id.setdefault(r["id"], r)
    logged = {}
    for rec in sim_logs:
        if rec.get("sim"):
            logged.setdefault(rec["sim"], rec)
    out = collections.OrderedDict()
    for o in outcomes:
        row = out.setdefault(o["kind"], collections.Counter())
        row["calls"] += 1
        row["no answer"] += o["status"] is None
        r = by_id.get(o["id"])
        lg = logged.get(o["id"])
        if r is not None:
            row["upstream"] += 1
            if lg is not None and lg.get("service") != o["service"]:
                row["not priced"] += 1
        if lg is None or _caught(o, instances):
            continue
        want = 0
        if r is not None:
            _, _, charged, price = _rule(r, o["service"])
            free = lg.get("free") == "true"
            want = 0 if (not charged or free) else price
        got = _micros(lg.get("amount"))
        if got is not None and got != want:
            row["log amount off"] += 1
    return out


# ------------------------------------------------------------- balances

def balances(report, rc, path, credits):
    """Prepaid money (docs/metering.md "Prepaid balances"), per buyer with
    a balance: Redis keeps credits - debits = available + held + spent
    and held = the nodes' holds; nothing spent beyond what was credited;
    what Redis counts as spent is what the meter says the balances paid
    (the usage transactions' prepaid part, everything being drained) and
    the ledger's prepaid account is what is left.  credits: {buyer:
    micros} credited at the start.  Returns the figures."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
    try:
        paid = dict(db.execute(
            "SELECT buyer, sum(prepaid_micros) FROM transactions"
            " WHERE kind = 'usage' GROUP BY buyer"))
        left = dict(db.execute(
            "SELECT a.name, sum(e.credit_micros) - sum(e.debit_micros)"
            " FROM accounts a JOIN entries e ON e.account_id = a.id"
            " WHERE a.kind = 'prepaid' GROUP BY a.id"))
    finally:
        db.close()

    bad_redis, bad_money, figures = [], [], {"spent": 0, "credited": 0}
    for buyer, credited in sorted(credits.items()):
        h = {f[4:]: int(v) for f, v in
             rc.hgetall("toll:balance:{%s}" % buyer).items()
             if f.startswith("USD:") and not f.startswith("USD:seen:")}
        g = lambda f: h.get(f, 0)  # noqa: E731
        holds = sum(v for f, v in h.items() if f.startswith("hold:"))
        if g("credits") - g("debits") != \
                g("available") + g("held") + g("spent") \
                or holds != g("held") or g("credits") != credited:
            bad_redis.append("%s: %r" % (buyer, h))
        account = left.get("prepaid:USD:%s" % buyer, 0)
        if not (0 <= g("spent") <= credited) \
                or g("spent") != paid.get(buyer, 0) \
                or account != credited - g("spent"):
            bad_money.append("%s: credited %d, spent %d in Redis, %d paid "
                             "in the ledger's usage, %d left in its account"
                             % (buyer, credited, g("spent"),
                                paid.get(buyer, 0), account))
        figures["spent"] += g("spent")
        figures["credited"] += credited
    report.check("balances in Redis: credits - debits = available + held "
                 "+ spent, held = the nodes' holds", not bad_redis,
                 "\n".join(bad_redis))
    report.check("no balance spent beyond its credits; spent = what the "
                 "meter charged to it = the ledger's prepaid account's "
                 "debits", not bad_money, "\n".join(bad_money))
    return figures
