"""The schedule is the seed's: the same seed gives the same actions, and
switching a class off changes only that class's actions."""

import pytest

import schedule


def test_same_seed_same_schedule():
    on = schedule.parse_classes("all")
    assert schedule.plan(42, 0.5, on) == schedule.plan(42, 0.5, on)
    assert schedule.plan(42, 0.5, on) != schedule.plan(43, 0.5, on)


def test_a_class_off_changes_only_its_own_actions():
    full = schedule.plan(42, 1, schedule.parse_classes("all"))
    part = schedule.plan(42, 1, schedule.parse_classes(
        "all,-timeout,-x_accel,-reload"))
    replaced = 0
    for la, lp in zip(full["lanes"], part["lanes"]):
        assert len(la) == len(lp)
        for (ta, ca), (tp, cp) in zip(la, lp):
            assert ta == tp
            if ca["kind"] in ("timeout", "x_accel"):
                assert cp["kind"] == "normal"
                assert cp["replaced"] == ca["kind"]
                replaced += 1
            else:
                assert ca == cp
    assert replaced > 0
    assert [(t, f["kind"]) for t, f in full["faults"]] == \
        [(t, f["kind"]) for t, f in part["faults"]]
    for _, f in part["faults"]:
        assert bool(f.get("skipped")) == (f["kind"] == "reload")


def test_every_fault_kind_comes_round():
    p = schedule.plan(1, 1, schedule.parse_classes("all"))
    kinds = [f["kind"] for _, f in p["faults"]]
    assert set(kinds) == set(schedule.FAULT_KINDS)


def test_class_spec():
    assert schedule.parse_classes("all") == set(schedule.ALL_CLASSES)
    assert schedule.parse_classes("none") == set()
    assert schedule.parse_classes("abort,reload") == {"abort", "reload"}
    assert "timeout" not in schedule.parse_classes("all,-timeout")
    with pytest.raises(ValueError):
        schedule.parse_classes("all,-timeotu")
