"""The seeded schedule: every call and every fault, planned before the run.

One random.Random(seed) draws, lane by lane and then for the fault lane,
each action's planned start and a sub-seed; the sub-seed alone decides
what the action is (kind, instance, buyer, path, delays).  So the same
seed and minutes give the same schedule, and switching a class off
changes only the actions of that class: a call of a class that is off
becomes a plain call, a fault of a class that is off is skipped, and
every other action stays as it was.
"""

import random

from cluster import BUYERS

LANES = 6
CALLS_PER_S_PER_LANE = 2.0
FAULT_EVERY_S = (2.0, 6.0)

# call classes, with their weight among calls; "normal" is always on
CALL_WEIGHTS = [
    ("normal", 50),
    ("5xx", 8),
    ("timeout", 3),
    ("abort", 5),
    ("body_slow", 4),
    ("body_abandoned", 4),
    ("try_files", 3),
    ("named", 3),
    ("error_page", 3),
    ("index", 3),
    ("x_accel", 3),
    ("rewrite", 3),
    ("h2", 4),
]

# fault classes: dealt from a shuffled deck, so each comes round
FAULT_KINDS = ["reload", "worker_kill", "redis_kill", "redis_pause",
               "settle_kill"]

CALL_CLASSES = [k for k, _ in CALL_WEIGHTS if k != "normal"]
ALL_CLASSES = CALL_CLASSES + FAULT_KINDS

# the plain services a call without a redirect goes to
PLAIN = ["api", "free", "data", "err", "pp"]


def parse_classes(spec):
    """"all", "none", a comma list, or "all,-x,-y": the set of classes on.
    Unknown names are an error, so that a typo does not silently run a
    weaker simulation."""
    on = set()
    for part in [p.strip() for p in (spec or "all").split(",") if p.strip()]:
        if part == "all":
            on |= set(ALL_CLASSES)
        elif part == "none":
            on = set()
        elif part.startswith("-"):
            name = part[1:]
            if name not in ALL_CLASSES:
                raise ValueError("unknown class %r (known: %s)"
                                 % (name, ", ".join(ALL_CLASSES)))
            on.discard(name)
        else:
            if part not in ALL_CLASSES:
                raise ValueError("unknown class %r (known: %s)"
                                 % (part, ", ".join(ALL_CLASSES)))
            on.add(part)
    return on


def _weighted(rng, table):
    total = sum(w for _, w in table)
    x = rng.uniform(0, total)
    for k, w in table:
        x -= w
        if x < 0:
            return k
    return table[-1][0]


def _plain_call(rng, call):
    svc = rng.choice(PLAIN)
    call["service"] = svc
    if svc == "data" and rng.random() < 0.3:
        call["method"], call["path"] = "POST", "/data/bulk"
    else:
        call["method"] = rng.choice(["GET", "GET", "POST"])
        call["path"] = "/%s/x%d" % (svc, rng.randrange(100))
    return call


def make_call(sub_seed, on):
    rng = random.Random(sub_seed)
    kind = _weighted(rng, CALL_WEIGHTS)
    call = {
        "kind": kind,
        "instance": rng.randrange(2),
        "buyer": rng.choice(BUYERS),
        "query": {},
        "body": b"",
    }
    if kind != "normal" and kind not in on:
        call["replaced"] = kind
        call["kind"] = kind = "normal"
    if kind == "normal":
        _plain_call(rng, call)
    elif kind == "5xx":
        _plain_call(rng, call)
        call["query"]["st"] = rng.choice([500, 502, 503])
        if rng.random() < 0.3:
            # a slow failure: its correction comes a flush or two after
            # the count taken at the gate
            call["query"]["ms"] = rng.randrange(100, 800)
    elif kind == "timeout":
        _plain_call(rng, call)
        call["query"]["hang"] = 1
    elif kind == "abort":
        _plain_call(rng, call)
        call["query"]["ms"] = 500
        call["abort_after_s"] = rng.uniform(0.02, 0.3)
    elif kind in ("body_slow", "body_abandoned"):
        _plain_call(rng, call)
        call["method"] = "POST"
        if call["service"] == "data" and rng.random() < 0.5:
            call["path"] = "/data/bulk"
        call["body_len"] = rng.randrange(200, 2000)
        if kind == "body_slow":
            call["chunks"] = rng.randrange(2, 5)
            call["gap_s"] = rng.uniform(0.1, 0.4)
        else:
            call["sent"] = rng.randrange(1, call["body_len"])
            # stall until nginx answers 408, or leave mid-body
            call["leave_after_s"] = (None if rng.random() < 0.6
                                     else rng.uniform(0.05, 0.5))
    elif kind == "h2":
        call["streams"] = []
        for _ in range(rng.randrange(2, 13)):
            s = _plain_call(rng, {"query": {}})
            s["method"] = "GET"
            if s["service"] == "data":
                s["path"] = "/data/x%d" % rng.randrange(100)
            if rng.random() < 0.15:
                st = rng.choice([500, 503])
                if "5xx" in on:
                    s["query"]["st"] = st
            call["streams"].append(s)
    else:
        call["method"] = "GET"
        n = rng.randrange(100)
        call["path"], call["service"] = {
            "try_files": ("/tf/x%d" % n, "tf"),
            "named": ("/nm/x%d" % n, "nm"),
            "error_page": ("/ep/x%d" % n, "ep"),
            "index": ("/ix/", "ix"),
            "x_accel": ("/xa/x%d" % n, "xa"),
            "rewrite": ("/rw/x%d" % n, "rw"),
        }[kind]
        if kind == "x_accel":
            call["query"]["xa"] = 1
    return call


def make_fault(sub_seed, kind, on):
    rng = random.Random(sub_seed)
    f = {"kind": kind, "instance": rng.randrange(2),
         "worker": rng.randrange(2),
         "down_s": rng.uniform(0.3, 2.5),
         "pause_ms": rng.randrange(300, 2500)}
    if kind not in on:
        f["skipped"] = True
    return f


def plan(seed, minutes, on):
    """{"lanes": [[(offset_s, call)...]...], "faults": [(offset_s, fault)],
    "duration_s": s}"""
    rng = random.Random(seed)
    duration = minutes * 60.0
    lanes = []
    n = 0
    for lane in range(LANES):
        t = rng.uniform(0, 0.5)
        out = []
        while t < duration:
            call = make_call(rng.getrandbits(64), on)
            call["id"] = "s%dl%dc%d" % (seed % 1000000, lane, len(out))
            call["lane"] = lane
            out.append((t, call))
            n += 1
            t += rng.expovariate(CALLS_PER_S_PER_LANE)
        lanes.append(out)
    faults = []
    t = rng.uniform(*FAULT_EVERY_S)
    deck = []
    while t < duration - 3.0:
        if not deck:
            deck = list(FAULT_KINDS)
            rng.shuffle(deck)
        kind = deck.pop()
        faults.append((t, make_fault(rng.getrandbits(64), kind, on)))
        t += rng.uniform(*FAULT_EVERY_S)
    return {"lanes": lanes, "faults": faults, "duration_s": duration,
            "calls": n}
