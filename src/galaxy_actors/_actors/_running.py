"""Running a supervisor for the duration of an ``async with`` block.

`open_supervisor` builds a `Supervisor` and runs it with `running`: the nursery every device
actor lives in is opened here, and the block's exit is the supervisor's shutdown. Nothing the
supervisor starts outlives the block.

Leaving the block: no new tasks are accepted; every device is disconnected gracefully in
parallel (queued tasks cancelled, running tasks given ``shutdown_grace`` seconds, sockets
closed with a close frame); then whatever is left is cancelled. The wait is bounded by
``shutdown_grace + close_timeout + 1 s``, where ``close_timeout`` is the connector's
attribute of that name, an optional part of a `Connector` (`WebSocketConnector` has one:
its bound on a closing handshake), or 4 s for a connector without one. A device still
closing past that bound is cancelled; the event hub is closed by then, and what it
publishes afterwards is dropped (counted in ``events.dropped_after_close``). Every task
submitted has its outcome by the time the block has exited.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Unpack

import trio

from .._sansio._errors import SupervisorClosed
from ._settings import Settings, SettingsOverrides, apply_overrides
from ._supervisor import Supervisor

if TYPE_CHECKING:
    import os

    from .._sansio._policy import RandomSource, RestartPolicy
    from .._transports._transport import Connector
    from ._device import DeviceActor
    from ._journal import Journal

__all__ = ["open_supervisor", "running"]


@contextlib.asynccontextmanager
async def open_supervisor(
    settings: Settings | None = None,
    *,
    policy: RestartPolicy | None = None,
    connector: Connector | None = None,
    rng: RandomSource | None = None,
    journal: Journal | str | os.PathLike[str] | None = None,
    **overrides: Unpack[SettingsOverrides],
) -> AsyncIterator[Supervisor]:
    """Run a supervisor for the duration of the block.

    >>> async with open_supervisor(task_name="lab") as sup:          # doctest: +SKIP
    ...     sup.add_device("pc-1", "ws://10.0.0.5:5000/ws", "Windows", capabilities=["web"])
    ...     result = await sup.run_task("Open the browser", capabilities=["web"])

    Arguments:
        settings: the `Settings` (default: ``Settings()``): timeouts, graces, limits.
        **overrides: `Settings` fields to change, checked the same way
            (``open_supervisor(settings, heartbeat_interval=5.0)``); an unknown name is a
            `TypeError`, a bad value a `ConfigurationError`.
        policy: the `RestartPolicy` (default: the reference's 5, 10, 20, 40, 80 s).
        connector: how to reach agents (default: trio-websocket); tests pass a
            `MemoryNetwork` connector. A connector may have a ``close_timeout`` attribute
            (seconds a close may take); the shutdown then waits that long for closes.
        rng: random source for jitter (default: a fresh `random.Random()`).
        journal: a task journal, or the path of an SQLite one (`SqliteJournal`): accepted
            tasks survive the process (docs/architecture.md, "Durability"). None: off.

    The whole shutdown waits at most ``shutdown_grace + close_timeout + 1`` seconds (see
    `running`).
    """
    supervisor = Supervisor(
        apply_overrides(settings, dict(overrides), "open_supervisor"),
        policy=policy,
        connector=connector,
        rng=rng,
        journal=journal,
    )
    async with running(supervisor):
        yield supervisor


@contextlib.asynccontextmanager
async def running(supervisor: Supervisor) -> AsyncIterator[Supervisor]:
    """Run an already constructed `Supervisor` for the duration of the block (what
    `open_supervisor` does after building one). A supervisor runs once.

    Exceptions: the block's own exception comes out as itself. One of the supervisor's
    tasks failing (something no device contains, such as a `KeyboardInterrupt`) comes out
    as an `ExceptionGroup`, as from any Trio nursery; when the block failed too, its
    exception is in that group beside the task's, so neither is lost. Catch either with
    ``except*``.

    Leaving the block waits for every device to disconnect, at most ``shutdown_grace +
    close_timeout + 1`` seconds (``close_timeout``: the connector's attribute, 4 s if it has
    none); events published after that are dropped, never raised."""
    if supervisor._nursery is not None or supervisor._closing:
        raise SupervisorClosed("a Supervisor runs only once")
    durable = supervisor.durable
    if durable is not None:
        await durable.open()  # a corrupt or busy journal fails here, before anything runs
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            supervisor._nursery = nursery
            if durable is not None:
                durable.start(nursery)
            try:
                yield supervisor
            except GeneratorExit:
                raise
            except BaseException as exc:
                # Re-raised below, outside the nursery, so the caller sees its own exception
                # rather than an ExceptionGroup wrapping it.
                body_error = exc
            finally:
                await _shutdown(supervisor)
                supervisor._host.events.close()
                supervisor._host.warnings.flush()
                for actor in supervisor._actors.values():
                    actor.cancel()  # also wakes whoever waits for a status it will not reach
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # A Cancelled in the block came from this nursery's cancellation (a task failed):
        # it is not the block's own failure.
        if body_error is None or isinstance(body_error, trio.Cancelled):
            raise
        raise BaseExceptionGroup(
            "the supervisor's block and one of its tasks failed", [body_error, *group.exceptions]
        ) from None
    finally:
        if durable is not None:
            with trio.CancelScope(shield=True):
                await durable.journal.aclose()
    if body_error is not None:
        raise body_error


async def _shutdown(supervisor: Supervisor) -> None:
    """Every device disconnected gracefully, in parallel, within `Supervisor.shutdown_bound`."""
    supervisor._closing = True
    if supervisor.durable is not None:
        supervisor.durable.closing()
    actors = list(supervisor._actors.values())
    # Shielded: shutdown must complete even when the block was left by cancellation;
    # bounded: grace for running tasks plus the connector's own bound on a close, so
    # that a close the connector allows is not cut short.
    with trio.CancelScope(shield=True, deadline=trio.current_time() + supervisor.shutdown_bound):
        async with trio.open_nursery() as nursery:
            for actor in actors:
                nursery.start_soon(_stop_actor, supervisor, actor)


async def _stop_actor(supervisor: Supervisor, actor: DeviceActor) -> None:
    await actor.disconnect(grace=supervisor.settings.shutdown_grace)
    actor.cancel()
