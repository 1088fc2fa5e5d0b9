"""The journal's options as a user meets them: retention, ``synchronous``, runtime devices,
the `DeviceManager` façade."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from lab import memory_lab

from galaxy_actors import DeviceManager, UnknownTask, open_supervisor
from galaxy_actors._process._config_journal import JournalConfig
from galaxy_actors._process._control import ControlServer, open_control_listeners
from galaxy_actors._process._control_client import open_control_client
from galaxy_actors.journal import SqliteJournal
from galaxy_actors.testing import MemoryNetwork, SimulatedAgent

TOKEN = "s3cret"
URL = "ws://agent/ws"


async def run_tasks(journal: SqliteJournal, *task_ids: str) -> None:
    async with memory_lab(journal=journal) as lab:
        await lab.connected("pc")
        for task_id in task_ids:
            assert (await lab.supervisor.run_task(task_id, device_id="pc", task_id=task_id)).ok


async def kept(journal: SqliteJournal, *task_ids: str) -> list[str]:
    """The ids whose outcome a new supervisor on the journal still answers."""
    found = []
    async with memory_lab(journal=journal) as lab:
        for task_id in task_ids:
            try:
                handle = await lab.supervisor.task(task_id)
            except UnknownTask:
                continue
            assert (await handle.result()).task_id == task_id
            found.append(task_id)
    return found


async def test_keep_count_keeps_the_most_recently_ended(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    ids = [f"t{i}" for i in range(6)]
    await run_tasks(SqliteJournal(path, keep_count=3, compact_every=1), *ids)
    assert await kept(SqliteJournal(path), *ids) == ["t3", "t4", "t5"]


async def test_keep_seconds_drops_outcomes_older_than_that(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    now = 1_000_000.0

    def wall_clock() -> float:
        return now

    options = {"keep_seconds": 60.0, "compact_every": 1, "wall_clock": wall_clock}
    await run_tasks(SqliteJournal(path, **options), "old")  # type: ignore[arg-type]
    now += 30.0
    await run_tasks(SqliteJournal(path, **options), "recent")  # type: ignore[arg-type]
    assert await kept(SqliteJournal(path), "old", "recent") == ["old", "recent"]
    now += 45.0  # "old" ended 75 s ago, "recent" 45 s ago
    await run_tasks(SqliteJournal(path, **options), "new")  # type: ignore[arg-type]
    assert await kept(SqliteJournal(path), "old", "recent", "new") == ["recent", "new"]


@pytest.mark.parametrize(("synchronous", "level"), [("normal", 1), ("full", 2)])
async def test_synchronous_sets_the_level_and_the_journal_works(
    tmp_path: Path, synchronous: str, level: int
) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path, synchronous=synchronous)
    async with memory_lab(journal=journal, shutdown_grace=0.1) as lab:
        # SQLite's own answer, on the journal's connection (a per-connection setting).
        assert journal._db is not None
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == level
        await lab.connected("pc", task_duration=100.0)
        await lab.supervisor.submit("long", device_id="pc", task_id="long")
        await lab.supervisor.submit("next", device_id="pc", task_id="next")
    async with memory_lab(journal=SqliteJournal(path, synchronous=synchronous)) as lab:
        await lab.connected("pc")
        assert (await (await lab.supervisor.task("next")).result()).ok


def test_synchronous_is_checked_and_the_config_passes_it_on(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteJournal(tmp_path / "j.sqlite3", synchronous="off")
    journal = JournalConfig(path=tmp_path / "j.sqlite3", synchronous="full").open()
    assert journal is not None and journal.synchronous == "full"


async def test_devices_added_and_removed_at_runtime_come_back_after_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite3"
    network = MemoryNetwork()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            SimulatedAgent(devices=["pc", "cam"]).serve_memory(network, URL, nursery)
            async with open_supervisor(
                connector=network.connector(), journal=path, shutdown_grace=0.1
            ) as sup:
                sup.add_device("pc", URL, "Windows")  # from the configuration file
                listeners, url = await open_control_listeners("127.0.0.1", 0)
                server = ControlServer(sup, TOKEN, close_timeout=1.0)
                await nursery.start(server.serve, listeners)
                async with open_control_client(url, TOKEN) as client:
                    reply = await client.request("add", device="cam", url=URL, os="Linux")
                    assert reply["ok"]
                    assert (await client.request("remove", device="pc"))["ok"]
                server.stop_accepting()
            await server.aclose(grace=1.0)

            # The next start: the configuration's devices, then what the journal changed.
            async with open_supervisor(connector=network.connector(), journal=path) as sup:
                sup.add_device("pc", URL, "Windows")
                assert sup.durable is not None
                await sup.durable.restore_devices()
                assert sup.device_ids == ["cam"]
                assert sup.snapshot("cam").os == "Linux"
                assert (await sup.run_task("snap", device_id="cam")).ok
            nursery.cancel_scope.cancel()


async def test_a_device_manager_with_a_journal_keeps_outcomes(tmp_path: Path) -> None:
    network = MemoryNetwork()
    path = tmp_path / "j.sqlite3"
    first = DeviceManager(connector=network.connector(), journal=path)
    async with trio.open_nursery() as nursery:
        SimulatedAgent(devices=["pc"]).serve_memory(network, URL, nursery)
        async with first as manager:
            await manager.register_device("pc", URL, "Windows")
            result = await manager.assign_task_to_device("t1", "pc", "open", {})
        second = DeviceManager(connector=network.connector(), journal=path)
        async with second as manager:
            assert await (await manager.supervisor.task("t1")).result() == result
        nursery.cancel_scope.cancel()
