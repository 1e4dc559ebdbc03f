"""``upgrade`` of a stopped machine starts it first, then upgrades (docker-machine's libmachine.Upgrade)."""

from __future__ import annotations

import pytest
from pymachine.machine import provision
from pymachine.machine.drivers.base import State


class _Driver:
    def __init__(self, state: State) -> None:
        self.current = state

    def state(self) -> State:
        return self.current


class _Machine:
    name = "dev"

    def __init__(self, state: State) -> None:
        self.driver = _Driver(state)
        self.events: list[str] = []

    def start(self, log) -> None:  # noqa: ANN001
        self.events.append("start")
        self.driver.current = State.RUNNING


class _Reached(Exception):
    pass


@pytest.mark.parametrize("state, started", [(State.STOPPED, True), (State.RUNNING, False)])
def test_upgrade_starts_a_stopped_machine_before_connecting(monkeypatch: pytest.MonkeyPatch, state: State,
                                                            started: bool) -> None:
    machine = _Machine(state)
    waits: list[float] = []

    def connect(driver, wait: float = 0.0):  # noqa: ANN001
        assert driver.state() == State.RUNNING, "connected to a machine that is not running"
        machine.events.append("connect")
        waits.append(wait)
        raise _Reached

    monkeypatch.setattr(provision, "connect", connect)
    logs: list[str] = []
    with pytest.raises(_Reached):
        provision.upgrade(machine, logs.append)  # type: ignore[arg-type]
    assert machine.events == (["start", "connect"] if started else ["connect"])
    assert ("Starting machine so machine can be upgraded..." in logs) is started
    assert waits == [provision.ssh_wait() if started else 10.0]  # a fresh boot gets the full SSH wait
