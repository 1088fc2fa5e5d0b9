"""One settings value: `Settings`, and every way in to a supervisor taking it the same.

`Settings` is the one place a setting is written down. These tests keep the five ways in
(`open_supervisor`, `Supervisor`, `DeviceManager`, the TOML file, the testing kit's
scenario) in step with it: a field added to `Settings` that one of them does not accept
fails here.
"""

from __future__ import annotations

import math
import typing
from typing import Any

import attrs
import pytest
import trio
from lab import memory_lab

from galaxy_actors import (
    ConfigurationError,
    DeviceManager,
    Settings,
    SettingsOverrides,
    TaskTimeout,
    open_supervisor,
)
from galaxy_actors._actors._supervisor import Supervisor
from galaxy_actors._process._config import parse_config
from galaxy_actors.testing import (
    SCENARIO_SUPERVISOR,
    DeviceSchedule,
    FaultSchedule,
    MemoryNetwork,
    ScenarioSettings,
    TaskSubmission,
    run_scenario,
)

FIELDS = attrs.fields(Settings)
DEVICE = '[[devices]]\ndevice_id = "pc"\nserver_url = "ws://127.0.0.1:9/ws"\n'


def other_value(field: attrs.Attribute[Any]) -> Any:
    """A valid value of ``field`` that is not its default, as TOML can write it."""
    if field.type == "str":
        return "elsewhere"
    if field.type == "float":
        return field.default + 1.5
    assert field.type == "int | None", f"a new kind of setting: {field.name}: {field.type}"
    return 7


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else repr(value)


# ---------------------------------------------------------------------- the five in step


def test_the_keyword_overrides_name_every_setting_and_only_those() -> None:
    hints = typing.get_type_hints(SettingsOverrides)
    assert list(hints) == [f.name for f in FIELDS]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
async def test_every_setting_is_taken_by_open_supervisor_and_the_manager(
    field: attrs.Attribute[Any],
) -> None:
    value = other_value(field)
    network = MemoryNetwork()
    async with open_supervisor(connector=network.connector(), **{field.name: value}) as sup:
        assert getattr(sup.settings, field.name) == value
    settings = Settings(**{field.name: value})
    assert Supervisor(settings).settings == settings
    manager = DeviceManager(connector=network.connector(), **{field.name: value})
    async with manager:
        assert getattr(manager.supervisor.settings, field.name) == value
    manager = DeviceManager(settings=settings, connector=network.connector())
    async with manager:
        assert manager.supervisor.settings == settings


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_every_setting_is_a_key_of_the_supervisor_table(field: attrs.Attribute[Any]) -> None:
    value = other_value(field)
    config = parse_config(f"[supervisor]\n{field.name} = {toml(value)}\n{DEVICE}")
    assert getattr(config.supervisor.settings, field.name) == value


def test_a_scenario_runs_its_supervisor_with_the_settings_it_is_given() -> None:
    schedule = FaultSchedule(
        devices=[DeviceSchedule("pc", faults=[])],
        tasks=[TaskSubmission(at=1.0, device="pc", task_id="t1")],
        settle=1.0,
    )
    timings = attrs.evolve(SCENARIO_SUPERVISOR, task_name="kit", heartbeat_interval=0.5)
    trace = run_scenario(schedule, settings=ScenarioSettings(supervisor=timings))
    frames = trace.agent_frames["pc"]
    # What the agent received: the task's session id carries the task name...
    assert "kit@t1" in {f.session_id for f in frames}
    # ...and heartbeats came every half second, not every 10 s.
    beats = [f.at for f in frames if f.type == "heartbeat"]
    assert len(beats) >= 4 and beats[1] - beats[0] == pytest.approx(0.5)


# ------------------------------------------------------------------- overrides and checks


async def test_an_unknown_setting_is_a_type_error_naming_the_closest() -> None:
    with pytest.raises(TypeError, match=r"open_supervisor\(\).*'heartbeat_intervl'.*"):
        async with open_supervisor(heartbeat_intervl=5.0):  # type: ignore[call-arg]
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="did you mean 'heartbeat_interval'"):
        DeviceManager(heartbeat_intervl=5.0)


async def test_overrides_apply_over_the_settings_given_and_are_checked() -> None:
    base = Settings(task_name="base", send_timeout=3.0)
    network = MemoryNetwork()
    async with open_supervisor(base, connector=network.connector(), send_timeout=4) as sup:
        assert (sup.settings.task_name, sup.settings.send_timeout) == ("base", 4.0)
    with pytest.raises(ConfigurationError, match="send_timeout must be a finite number > 0"):
        async with open_supervisor(base, send_timeout=-1):
            pass  # pragma: no cover


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("task_name", "a@b"),
        ("task_name", ""),
        ("heartbeat_interval", 0),
        ("heartbeat_timeout", math.inf),
        ("registration_timeout", math.nan),
        ("device_info_timeout", "10"),
        ("send_timeout", True),
        ("disconnect_grace", -1),
        ("shutdown_grace", math.inf),
        ("max_concurrent_connections", 0),
        ("max_queue", 2.5),
    ],
)
def test_a_bad_setting_is_refused_by_name(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings(**{name: value})
    # The file refuses it too, naming the key.
    with pytest.raises(ConfigurationError, match=rf"supervisor\.{name}"):
        parse_config(f"[supervisor]\n{name} = {toml(value)}\n{DEVICE}")


def test_settings_are_a_value() -> None:
    settings = Settings(heartbeat_interval=5, disconnect_grace=0)
    assert settings.heartbeat_interval == 5.0 and isinstance(settings.heartbeat_interval, float)
    assert settings == Settings(heartbeat_interval=5.0, disconnect_grace=0.0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        settings.heartbeat_interval = 1.0  # type: ignore[misc]


def test_the_manager_keeps_the_references_positional_arguments() -> None:
    manager = DeviceManager("ref", 12.0, 2.0)
    assert (manager.task_name, manager.heartbeat_interval) == ("ref", 12.0)
    assert manager.policy.reconnect_delay == 2.0
    assert DeviceManager().task_name == "test_task"  # the reference's default
    # A positional argument wins over the settings given, as a keyword argument does.
    assert DeviceManager("mine", settings=Settings(task_name="theirs")).task_name == "mine"


# ------------------------------------------------------------------------ task_timeout


async def test_task_timeout_bounds_the_task_on_the_device_not_the_call(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        await lab.connected("pc")
        sup = lab.supervisor
        with pytest.raises(TaskTimeout):
            await sup.run_task("lost", {"sim_lose_end": True}, device_id="pc", task_timeout=7.0)
        assert trio.current_time() == pytest.approx(7.0)
        with pytest.raises(TypeError):
            await sup.submit("x", device_id="pc", timeout=7.0)  # type: ignore[call-arg]


# ------------------------------------------------------------------ what users may reach


async def test_users_get_values_not_the_supervisors_internals(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        await lab.connected("pc")
        sup = lab.supervisor
        for internal in ("decide", "device_of_session", "events", "registry", "warnings"):
            assert not hasattr(sup, internal), internal
        stats = sup.stats("pc")
        info = sup.system_info("pc")
        assert info is not None
        info["os"] = "changed by the user"
        await sup.run_task("one", device_id="pc")
        assert stats.tasks_completed == 0  # a copy: the supervisor counts in its own
        assert sup.stats("pc").tasks_completed == 1
        assert sup.system_info("pc") != info
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            sup.snapshot("pc").status = None  # type: ignore[misc,assignment]


def test_handshakes_are_bounded_by_default() -> None:
    # Without a bound, thousands of handshakes at once on a loaded host time out and retry
    # together (docs/performance.md): the library's default is the process's, 64.
    assert Settings().max_concurrent_connections == 64
    assert (
        parse_config(
            '[[devices]]\ndevice_id = "pc"\nserver_url = "ws://127.0.0.1:1/ws"\n'
        ).supervisor.settings
        == Settings()
    )
