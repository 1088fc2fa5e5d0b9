"""The public surface: what is where, and that it prints with the path a user imports."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import galaxy_actors
from galaxy_actors import (
    GalaxyActorsError,
    TaskError,
    TaskTimeout,
    UnknownDevice,
    open_supervisor,
)
from galaxy_actors.errors import ConnectError, TransportClosed, TransportError
from galaxy_actors.transport import MemoryConnector, MemoryNetwork

PUBLIC_MODULES = [
    "galaxy_actors",
    "galaxy_actors.aip",
    "galaxy_actors.cluster",
    "galaxy_actors.errors",
    "galaxy_actors.events",
    "galaxy_actors.journal",
    "galaxy_actors.metrics",
    "galaxy_actors.testing",
    "galaxy_actors.transport",
]


def test_every_public_module_is_listed_here() -> None:
    """A new public module must be added above, so the checks below cover it."""
    found = {
        f"galaxy_actors.{info.name}"
        for info in pkgutil.iter_modules(galaxy_actors.__path__)
        if not info.name.startswith("_")
    }
    assert found == set(PUBLIC_MODULES) - {"galaxy_actors"}


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_prints_with_a_path_it_can_be_imported_from(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        obj = getattr(module, name)
        if not isinstance(obj, type | types.FunctionType):
            continue  # constants and type aliases have no path of their own
        path = obj.__module__
        assert path.startswith("galaxy_actors"), (name, path)
        assert not any(part.startswith("_") for part in path.split(".")), (name, path)
        assert getattr(importlib.import_module(path), obj.__qualname__) is obj, (name, path)


def test_classes_and_functions_print_with_their_public_path() -> None:
    assert repr(TaskTimeout) == "<class 'galaxy_actors.TaskTimeout'>"
    assert repr(ConnectError) == "<class 'galaxy_actors.errors.ConnectError'>"
    assert repr(MemoryConnector) == "<class 'galaxy_actors.transport.MemoryConnector'>"
    assert open_supervisor.__module__ == "galaxy_actors"
    error = TaskTimeout("late", task_id="t", device_id="pc")
    assert type(error).__module__ + "." + type(error).__qualname__ == "galaxy_actors.TaskTimeout"


def test_the_top_level_keeps_what_a_supervisor_user_needs_and_no_wire_codec() -> None:
    top = set(galaxy_actors.__all__)
    assert {"open_supervisor", "Supervisor", "DeviceManager", "TaskHandle", "TaskTimeout"} <= top
    assert not top & {"encode_client", "decode_server", "ServerMessage", "WebSocketConnector"}
    assert len(top) < 40


def test_what_memory_network_returns_is_exported() -> None:
    assert isinstance(MemoryNetwork().connector(), MemoryConnector)


def test_every_error_derives_from_the_common_base() -> None:
    errors = importlib.import_module("galaxy_actors.errors")
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), GalaxyActorsError), name
    assert issubclass(ConnectError, TransportError) and issubclass(TransportClosed, TransportError)
    assert issubclass(UnknownDevice, KeyError) and not issubclass(UnknownDevice, TaskError)


def test_no_exception_is_defined_outside_the_errors_module() -> None:
    errors = importlib.import_module("galaxy_actors.errors")
    defined = set(errors.__all__)
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, GalaxyActorsError):
                assert name in defined, (module_name, name)


async def test_except_task_error_does_not_swallow_a_wrong_device_id() -> None:
    """A typo in a device id is a bug of the call, not a task that could not run."""
    async with open_supervisor(connector=MemoryNetwork().connector()) as supervisor:
        with pytest.raises(UnknownDevice):
            try:
                await supervisor.connect("no-such-device")
            except TaskError:
                pytest.fail("UnknownDevice was caught as a TaskError")
        with pytest.raises(UnknownDevice):
            try:
                await supervisor.submit("x", device_id="no-such-device")
            except TaskError:
                pytest.fail("UnknownDevice was caught as a TaskError")


def test_near_twins_are_gone() -> None:
    """An exception and an event, a decision and an event: names that say which is which."""
    events = importlib.import_module("galaxy_actors.events")
    errors = importlib.import_module("galaxy_actors.errors")
    assert not hasattr(errors, "ConnectFailed") and hasattr(events, "ConnectionFailed")
    assert not hasattr(events, "GaveUp") and hasattr(galaxy_actors, "GiveUp")
    assert hasattr(events, "RestartsStopped")
