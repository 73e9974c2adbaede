"""Tier 1: the identity check's cases (tests/identity_cases.py) cover every hvparam value
the handover's translator accepts, so a translator that learns a new value without a
case booting it fails here."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hvlibvirt import constants as C
from hvlibvirt.handover import model, runtime
from identity_cases import (CASES, CHOICES, GANETI_BY_DEBIAN, GANETI_CHANGES, NOT_BOOTED,
                            SHAPE_CLASSES, SHAPES, cases, covered, effective)

pytestmark = pytest.mark.tier1

RUNTIME = Path(__file__).parent / "fixtures" / "handover" / "ganeti30-pc-1cpu.runtime"
# Some values are accepted only beside others (vnet_hdr off: not on virtio NICs).
CONTEXTS = ({}, {C.HV_NIC_TYPE: "e1000"})


def _problems(hvparams: dict[str, Any]) -> list[str]:
    data = json.loads(RUNTIME.read_text())
    data[2].update(hvparams)
    parsed = runtime.parse(json.dumps(data))
    return model.problems(parsed, SimpleNamespace(hvparams=dict(data[2])))


def accepted() -> set[tuple[str, Any]]:
    """Every (hvparam, value) of the finite choices that the translator does not refuse."""
    return {(param, value) for param, values in CHOICES.items() for value in values
            if any(not _problems({**context, param: value}) for context in CONTEXTS)}


def test_every_accepted_value_is_booted() -> None:
    missing = accepted() - covered() - set(NOT_BOOTED)
    assert not missing, f"accepted by the translator, booted by no identity case: {missing}"


def test_every_shape_of_the_open_parameters_is_booted() -> None:
    booted = covered()
    for param, shape in SHAPES.items():
        classes = SHAPE_CLASSES.get(param, {False, True})
        missing = {c for c in classes if (param, c) not in booted
                   and (param, c) not in NOT_BOOTED}
        assert not missing, f"{param}: no identity case has {missing}"
    for what in ("vcpus", "disks", "nics"):
        assert {(what, 1), (what, 2)} <= booted, what


def test_not_booted_values_are_accepted_ones() -> None:
    """An exemption for a value the translator refuses (or a case boots) is stale."""
    choices = {(p, v) for p, v in NOT_BOOTED if p in CHOICES}
    assert choices <= accepted()
    assert not set(NOT_BOOTED) & covered()


@pytest.mark.parametrize("ganeti", sorted(set(GANETI_BY_DEBIAN.values())))
def test_every_case_is_translatable(ganeti: str) -> None:
    for case in cases(ganeti):
        hvp = effective(case)
        assert not _problems({p: hvp[p] for p in CHOICES}), (ganeti, case.name)


def test_platform_changes_change_named_cases_and_say_why() -> None:
    """Another Ganeti's case list is CASES with a few values replaced, each with why."""
    for ganeti, changes in GANETI_CHANGES.items():
        by_name = {case.name: case for case in CASES}
        for name, (overrides, why) in changes.items():
            assert why and overrides, (ganeti, name)
            assert any(by_name[name].hvparams.get(p) != v for p, v in overrides.items())
        assert [case.name for case in cases(ganeti)] == list(by_name)
