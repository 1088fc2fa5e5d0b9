"""How the simulated agent runs a task: refuse it, or plan it, acknowledge it and end it.

A task is refused (an ``error`` frame, no ``session_id``) by ``reject_tasks``, a target the
agent does not serve, or a session id another connection owns. Otherwise its `_TaskPlan`
comes from the agent's knobs and the task's ``metadata.task_data`` overrides (``sim_*``), it
is acknowledged at once, and its TASK_END goes out after the plan's duration, never (a lost
end), or on a later connection (stale ends, `SimulatedAgent.drop_connections`).
`_AgentTasks` is that part of `SimulatedAgent`; the knobs and state it reads are
`SimulatedAgent`'s attributes, declared below for the type checker only.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._sansio._aip import ClientMessage, ClientType, ServerMessage, ServerMessageType, WireStatus
from .._sansio._checks import number_problem
from .._sansio._errors import TransportClosed
from ._agent_connections import _Connection


class _AgentTasks:
    """Mixin of `SimulatedAgent`: the tasks it runs."""

    __slots__ = ()

    if TYPE_CHECKING:
        task_duration: float
        task_result: Any
        task_error: str | None
        lose_task_end: bool
        reject_tasks: str | None
        _sessions: dict[str, _Connection]
        _plans: dict[str, tuple[str | None, _TaskPlan]]
        _stale_delay: float

        def _serves(self, device_id: str) -> bool: ...

        async def _send_error(self, connection: _Connection, text: str) -> None: ...

        @staticmethod
        async def _send(connection: _Connection, message: ServerMessage) -> None: ...

    async def _start_task(self, connection: _Connection, message: ClientMessage) -> None:
        session_id = message.session_id or _uuid()
        refusal = self._task_refusal(connection, message, session_id)
        plan = self._plan(message) if refusal is None else refusal
        if isinstance(plan, str):
            await self._send_error(connection, plan)
            return
        self._sessions[session_id] = connection
        connection.sessions.add(session_id)
        self._plans[session_id] = (message.request, plan)
        await self._send(
            connection,
            ServerMessage(ServerMessageType.HEARTBEAT, WireStatus.OK, session_id=session_id),
        )
        if plan.lose_end:
            return
        if plan.duration > 0:
            connection.nursery.start_soon(
                self._end_task_later, connection, session_id, message.request, plan
            )
        else:
            await self._end_task(connection, session_id, message.request, plan)

    def _task_refusal(
        self, connection: _Connection, message: ClientMessage, session_id: str
    ) -> str | None:
        if self.reject_tasks is not None:
            return self.reject_tasks
        target = message.target_id
        if target is None and connection.client_type is ClientType.CONSTELLATION:
            return "Constellation task requests require target_id"
        if target is not None and not self._serves(target):
            return f"Target device '{target}' is not connected"
        owner = self._sessions.get(session_id)
        if owner is not None and owner is not connection:
            return f"session_id '{session_id}' is owned by another client"
        return None

    def _plan(self, message: ClientMessage) -> _TaskPlan | str:
        """How this task ends, from the agent's defaults and the task's ``sim_*`` overrides;
        a string says why the overrides are invalid."""
        task_data = (message.metadata or {}).get("task_data")
        if not isinstance(task_data, Mapping):
            task_data = {}
        duration = task_data.get("sim_duration", self.task_duration)
        if number_problem(duration, allow_zero=True) is not None:
            return "metadata.task_data.sim_duration must be a non-negative number"
        error = task_data.get("sim_error", self.task_error)
        if error is not None and not isinstance(error, str):
            return "metadata.task_data.sim_error must be a string or null"
        lose_end = task_data.get("sim_lose_end", self.lose_task_end)
        if not isinstance(lose_end, bool):
            return "metadata.task_data.sim_lose_end must be a boolean"
        result = task_data.get("sim_result", self.task_result)
        return _TaskPlan(float(duration), result, error, lose_end)

    async def _end_task_later(
        self, connection: _Connection, session_id: str, request: str | None, plan: _TaskPlan
    ) -> None:
        await trio.sleep(plan.duration)
        with contextlib.suppress(TransportClosed):
            await self._end_task(connection, session_id, request, plan)

    async def _end_task(
        self, connection: _Connection, session_id: str, request: str | None, plan: _TaskPlan
    ) -> None:
        # Released before the frame goes out: a client may reuse the session id at once.
        if self._sessions.get(session_id) is connection:
            del self._sessions[session_id]
        connection.sessions.discard(session_id)
        self._plans.pop(session_id, None)
        await self._send(connection, _task_end(session_id, request, plan))

    async def _send_stale(
        self, connection: _Connection, stale: list[tuple[str, str | None, _TaskPlan]]
    ) -> None:
        await trio.sleep(self._stale_delay)
        for session_id, request, plan in stale:
            with contextlib.suppress(TransportClosed):
                await self._send(connection, _task_end(session_id, request, plan))


def _uuid() -> str:
    return str(uuid.uuid4())


def _task_end(session_id: str, request: str | None, plan: _TaskPlan) -> ServerMessage:
    return ServerMessage(
        ServerMessageType.TASK_END,
        WireStatus.FAILED if plan.error is not None else WireStatus.COMPLETED,
        session_id=session_id,
        result=[{"request": request, "result": plan.result}],
        error=plan.error,
        response_id=_uuid(),
    )


@attrs.frozen
class _TaskPlan:
    duration: float
    result: Any
    error: str | None
    lose_end: bool
