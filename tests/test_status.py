"""Device statuses: the one transition table, as docs/architecture.md describes it."""

from __future__ import annotations

import itertools

import pytest

from galaxy_actors import GalaxyActorsError
from galaxy_actors._sansio._status import (
    ALLOWED_TRANSITIONS,
    CONNECTED_STATUSES,
    DeviceStatus,
    InvalidTransition,
    check_transition,
)

D = DeviceStatus

# Written out from docs/architecture.md: DISCONNECTED -> CONNECTING -> CONNECTED -> IDLE <->
# BUSY; FAILED from any active status; FAILED -> CONNECTING (restart) or DISCONNECTED; every
# status but DISCONNECTED itself -> DISCONNECTED (an intentional disconnect).
EXPECTED = {
    (D.DISCONNECTED, D.CONNECTING),
    (D.CONNECTING, D.CONNECTED),
    (D.CONNECTED, D.IDLE),
    (D.IDLE, D.BUSY),
    (D.BUSY, D.IDLE),
    (D.CONNECTING, D.FAILED),
    (D.CONNECTED, D.FAILED),
    (D.IDLE, D.FAILED),
    (D.BUSY, D.FAILED),
    (D.FAILED, D.CONNECTING),
    (D.CONNECTING, D.DISCONNECTED),
    (D.CONNECTED, D.DISCONNECTED),
    (D.IDLE, D.DISCONNECTED),
    (D.BUSY, D.DISCONNECTED),
    (D.FAILED, D.DISCONNECTED),
}
ALL_PAIRS = list(itertools.product(DeviceStatus, repeat=2))


def test_statuses_are_the_references() -> None:
    assert [s.value for s in DeviceStatus] == [
        "disconnected", "connecting", "connected", "idle", "busy", "failed",
    ]  # fmt: skip


def test_table_has_an_entry_for_every_status() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(DeviceStatus)


def test_table_matches_design() -> None:
    table = {(old, new) for old, news in ALLOWED_TRANSITIONS.items() for new in news}
    assert table == EXPECTED


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=lambda s: str(s))
def test_check_transition_allows_exactly_the_table(old: DeviceStatus, new: DeviceStatus) -> None:
    if (old, new) in EXPECTED:
        check_transition("pc", old, new)
    else:
        with pytest.raises(InvalidTransition):
            check_transition("pc", old, new)


def test_no_status_transitions_to_itself() -> None:
    for status in DeviceStatus:
        with pytest.raises(InvalidTransition):
            check_transition("pc", status, status)


def test_every_status_but_disconnected_can_be_disconnected() -> None:
    for status in DeviceStatus:
        if status is not D.DISCONNECTED:
            check_transition("pc", status, D.DISCONNECTED)


def test_a_device_must_connect_before_it_can_be_idle() -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition("office_pc", D.DISCONNECTED, D.IDLE)
    message = str(info.value)
    assert "office_pc" in message
    assert "disconnected" in message
    assert "idle" in message


def test_a_failed_device_restarts_through_connecting() -> None:
    for shortcut in (D.CONNECTED, D.IDLE, D.BUSY):
        with pytest.raises(InvalidTransition):
            check_transition("pc", D.FAILED, shortcut)
    check_transition("pc", D.FAILED, D.CONNECTING)


def test_a_disconnected_device_cannot_fail() -> None:
    with pytest.raises(InvalidTransition):
        check_transition("pc", D.DISCONNECTED, D.FAILED)


def test_invalid_transition_is_a_galaxy_actors_runtime_error() -> None:
    with pytest.raises(GalaxyActorsError):
        check_transition("pc", D.BUSY, D.CONNECTING)
    assert issubclass(InvalidTransition, RuntimeError)


def test_the_reference_lifecycle_is_a_path_through_the_table() -> None:
    path = [
        D.DISCONNECTED, D.CONNECTING, D.CONNECTED, D.IDLE, D.BUSY, D.IDLE, D.BUSY, D.FAILED,
        D.CONNECTING, D.FAILED, D.CONNECTING, D.CONNECTED, D.IDLE, D.DISCONNECTED,
    ]  # fmt: skip
    for old, new in itertools.pairwise(path):
        check_transition("pc", old, new)


def test_connected_statuses_are_those_holding_a_live_connection() -> None:
    assert frozenset({D.CONNECTED, D.IDLE, D.BUSY}) == CONNECTED_STATUSES
