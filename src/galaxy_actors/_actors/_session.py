"""A Session: the thin loop that runs one connection of one device through the engine.

Theory of operation. Every protocol rule lives in the sans-IO engine (`_engine.py`); the
Session owns only what the engine cannot: the transport, Trio's clock and cancel scopes. It
feeds the engine each received frame and the passing of time, sends what the engine returns,
and hands each event to its host, the device actor, through one method (`SessionHost`).

One reader per connection, by construction: only the Session's loop calls
``transport.receive()``. A task's submitter may *send* its TASK frame itself when the device
is idle (no hand-off to the loop), but it never reads: it waits for its handle, which the
actor resolves when the loop delivers the TASK_END.

A Session runs in its device actor's task, inside a cancel scope that is the Session's life:
any failure records the engine's `ConnectionDead` and cancels that scope, so the whole
connection dies as a unit and nothing half-dead survives it (trio-websocket's reader too,
when that client is chosen: it lives in the connector's nursery inside the scope; the
default direct client has no task, its reading is this loop's ``receive``).
"""

from __future__ import annotations

import math
from typing import Protocol

import trio

from .._sansio._engine import AIPConnection, ConnectionDead, EngineEvent, Registered
from .._sansio._policy import FailureReason
from .._transports._transport import ConnectError, Connector, Transport, TransportClosed
from ._task import TaskHandle

__all__ = ["Session", "SessionHost"]


class SessionHost(Protocol):
    """What a Session needs from the device actor that runs it."""

    def on_event(self, event: EngineEvent) -> None:
        """An event of the engine. A `ConnectionDead` comes first of any outcome it causes."""

    def next_task(self) -> TaskHandle | None:
        """The next queued task to send now, taken out of the queue; None if there is none."""

    def task_sent(self, task: TaskHandle, now: float) -> None:
        """``task`` is on the device from ``now`` (its frame is being written)."""

    def task_not_sent(self, task: TaskHandle, *, by_caller: bool) -> None:
        """``task``'s frame-safe send was cancelled before any of it left."""


class Session:
    """One connection attempt of one device. Created and run by the device actor."""

    __slots__ = (
        "_frame_safe",
        "_limiter",
        "_recv_scope",
        "_send_timeout",
        "dead",
        "engine",
        "finished",
        "host",
        "scope",
        "stop_deadline",
        "stopping",
        "transport",
    )

    def __init__(
        self,
        host: SessionHost,
        engine: AIPConnection,
        *,
        send_timeout: float,
        limiter: trio.CapacityLimiter | None,
    ) -> None:
        self.host = host
        self.engine = engine
        self._send_timeout = send_timeout
        self._limiter = limiter
        self.scope = trio.CancelScope()
        self.transport: Transport | None = None
        # How the connection ended against our will; None while it lives, or if it ended
        # on purpose (`stop`).
        self.dead: ConnectionDead | None = None
        # Closed on purpose, or its run is over: a failure after that is not reported. A
        # submitter's send still under way then fails only because we closed the
        # connection under it, and the actor has moved on (DISCONNECTED, removed, or on a
        # new Session): that failure is neither the device's nor this actor's to hear.
        self.finished = False
        self.stopping = False
        self.stop_deadline = math.inf
        self._recv_scope: trio.CancelScope | None = None
        self._frame_safe = False

    # ----------------------------------------------------------------- control from outside

    def fail(self, reason: FailureReason, detail: str) -> None:
        """End the Session for ``reason``. The first ending wins."""
        self._end(self.engine.fail(reason, detail, trio.current_time()))

    def _end(self, dead: ConnectionDead) -> None:
        if self.dead is None and not self.finished:
            self.dead = dead
            self.host.on_event(dead)
        self.scope.cancel()

    def _close(self) -> None:
        """Closed on purpose: the engine ignores what follows, and we report none of it."""
        self.finished = True
        self.engine.close()

    def stop(self, grace: float) -> None:
        """End the Session on purpose: at once if no task runs, else once it ends or after
        ``grace`` seconds, whichever is first. No queued task is sent any more."""
        if not self.engine.serving:
            if self.dead is None:
                self.stopping = True
                self._close()
            self.scope.cancel()
            return
        self.stopping = True
        self.stop_deadline = min(self.stop_deadline, trio.current_time() + grace)
        self._wake()

    def can_send_now(self) -> bool:
        """Whether a task submitted now may be sent at once by its submitter."""
        return not self.stopping and self.engine.can_send_task()

    def _wake(self) -> None:
        """Make the loop look at the queue, its stop and its deadlines now."""
        if self._recv_scope is not None:
            self._recv_scope.deadline = -math.inf

    # ----------------------------------------------------------------------------- the run

    async def run(self, connector: Connector, url: str) -> None:
        """Connect, register, fetch device info, then serve until the Session ends. Every
        ending is recorded in ``dead`` (or it was a `stop`); nothing expected is raised.

        Two cancel scopes: until the connection is open, ending cancels the whole attempt;
        once it is open it cancels only the protocol inside it, so the connector closes the
        connection with its reader still running and the closing handshake completes
        before the close: a real server forgets our ``client_id`` only then."""
        limiter = self._limiter
        with self.scope:
            if limiter is not None:
                await limiter.acquire_on_behalf_of(self)
            try:
                async with connector.open(url) as transport:
                    inner = trio.CancelScope()
                    if self.scope.cancel_called:
                        inner.cancel()
                    self.scope = inner
                    self.transport = transport
                    frame_safe = getattr(transport, "frame_safe_sends", None)
                    self._frame_safe = bool(
                        frame_safe is not None and frame_safe(self._send_timeout)
                    )
                    with inner:
                        if not inner.cancel_called:  # stopped while it opened: send nothing
                            await self._send(self.engine.start(trio.current_time()))
                            await self._serve()  # returns only once stopped
                            # Before the connector closes the connection, which fails any
                            # send still under way in a submitter's task.
                            self._close()
            except ConnectError as exc:
                # The connector names the reason: tls_failed, unauthorized, connect_failed...
                self.fail(exc.reason, str(exc))
            finally:
                self._release_limiter()
                # Cancelled from outside (a shutdown past its bound) lands here too.
                self.finished = True

    def _release_limiter(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter.release_on_behalf_of(self)

    async def _serve(self) -> None:
        """The loop: send what is due, receive and deliver frames until a deadline.

        One receive scope stays open while frames keep coming: entering a cancel scope
        costs about as much as routing a frame. Over a frame-safe transport the next queued
        task is sent from inside the scope too (a cancelled frame-safe send sent nothing,
        and the task goes back to the head of the queue). The scope is left to send a due
        heartbeat, to stop, or when a deadline passes (`_wake` makes one pass now)."""
        engine = self.engine
        host = self.host
        transport = self.transport
        assert transport is not None
        current_time = trio.current_time
        while True:
            frame = engine.outgoing(current_time())
            if frame is not None:
                await self._send(frame)
                continue
            if engine.can_send_task():
                if self.stopping:
                    return
                task = host.next_task()
                if task is not None:
                    await self.send_task(task)
                    continue
            with trio.CancelScope(deadline=self._deadline()) as scope:
                self._recv_scope = scope
                while True:
                    try:
                        raw = await transport.receive()
                    except TransportClosed as exc:
                        self._lost(exc)
                        # The Session's scope is cancelled now: this raises Cancelled.
                        await trio.lowlevel.checkpoint()
                    now = current_time()
                    event = engine.receive(raw, now)
                    if event is not None:
                        self._deliver(event)
                    if engine.can_send_task():
                        if self.stopping or not self._frame_safe:
                            break  # stop, or send the next task shielded, outside
                        task = host.next_task()
                        if task is not None:
                            await self.send_task(task)
                    deadline = self._deadline()
                    if deadline <= now or scope.deadline == -math.inf:
                        # Due already (the first heartbeat right after registration), or
                        # woken (`_wake`) meanwhile: leave now. Leaving costs far less
                        # than cancelling our own receive, and a wake is not overwritten.
                        break
                    if deadline != scope.deadline:
                        scope.deadline = deadline
            self._recv_scope = None
            # Left at a deadline, or to send: what time means now is checked either way
            # (checking early finds nothing due and changes nothing).
            now = current_time()
            event = engine.check_deadlines(now)
            if event is not None:
                self._deliver(event)
            if now >= self.stop_deadline:
                return  # `run` closes the engine

    def _deliver(self, event: EngineEvent) -> None:
        if type(event) is ConnectionDead:
            self._end(event)
            return
        if type(event) is Registered:
            # Registration is what the handshake limit protects (a server's accept queue).
            self._release_limiter()
        self.host.on_event(event)

    def _deadline(self) -> float:
        return min(self.engine.next_deadline(), self.stop_deadline)

    # -------------------------------------------------------------------------- sending

    async def send_task(self, task: TaskHandle, *, by_caller: bool = False) -> None:
        """Put ``task`` on the device. Called by the loop, or directly by the submitting
        task (``by_caller``) when the device is idle and its queue empty (no hand-off).

        A send must never be torn by its caller's cancellation: that would corrupt the
        connection for every later task. Over a frame-safe transport a cancelled send sent
        nothing, so the task simply did not start and no cancel scope is needed; otherwise
        the send is shielded and bounded here."""
        now = trio.current_time()
        frame = self.engine.send_task(
            task.task_id, task.description, task.data_json, task.timeout, now
        )
        self.host.task_sent(task, now)
        journal = task._journal
        if journal is not None and not await journal.sent(task, self, by_caller=by_caller):
            return  # an at-most-once task not recorded as sent is not sent (_durable.py)
        recv_scope = self._recv_scope
        if recv_scope is not None:
            deadline = now + task.timeout
            if deadline < recv_scope.deadline:
                recv_scope.deadline = deadline
        if not self._frame_safe:
            await self._send(frame, shield=True)
            return
        try:
            await self._send(frame)
        except trio.Cancelled:
            self.engine.unsend_task(task.task_id)
            self.host.task_not_sent(task, by_caller=by_caller)
            raise

    def _lost(self, exc: TransportClosed) -> None:
        """The transport closed under a receive or a send: the connection's end."""
        now = trio.current_time()
        self._end(self.engine.connection_lost(exc.code, str(exc), now, by_peer=exc.by_peer))

    async def _send(self, frame: str, *, shield: bool = False) -> None:
        transport = self.transport
        assert transport is not None
        if self._frame_safe:
            try:
                await transport.send(frame)
            except TransportClosed as exc:
                self._lost(exc)
            return
        limit = self._send_timeout
        try:
            with trio.CancelScope(shield=shield, deadline=trio.current_time() + limit) as scope:
                await transport.send(frame)
        except TransportClosed as exc:
            self._lost(exc)
            return
        if scope.cancelled_caught:
            self.fail(FailureReason.CONNECTION_CLOSED, f"send stalled for {limit:g} s")
