"""The supervisor's side of the task journal: when to write, and how to start again.

Theory of operation. `Durability` sits between one `Supervisor` and one `Journal`. The
supervisor calls it at a few hooks, and only when a journal is configured, so the path of
a supervisor without one is unchanged:

- ``submit``: an id the journal knows is answered from it (idempotent submission); a new
  task is appended and **committed before it reaches its device**, so a submit that returned
  is on disk, and a submit that failed (`JournalUnavailable`) left nothing behind. An
  at-most-once task that goes straight to an idle device is appended as sent, in the same
  commit: one durable write instead of two before its frame leaves. If the device is taken
  meanwhile and the task queued instead, its "sent" is taken back (lazily: until then a
  crash reads it as "maybe ran", which never runs it twice).
- sending (`sent`, awaited by `Session.send_task` between marking the task on the device and
  writing its frame): an at-most-once task's "sent" is committed *before* its frame leaves,
  so a crash in between reads as "maybe ran" (`OutcomeUnknown`), never as "not sent". An
  at-least-once task's is written lazily: losing it only puts the task back in order rather
  than at the head.
- an outcome (`ended`, from `TaskHandle._resolve`): written at once; ``handle.wait()`` and
  ``result()`` return only after it is committed, so a caller never sees an outcome that a
  crash could take back.
- recovery (`start`): open tasks come back in submission order; an at-most-once task that
  had been sent ends `OutcomeUnknown` and is never sent again; the others are queued on
  their device when it is added (`device_added`), at-least-once tasks that had been sent at
  the head of the queue; tasks routed by capabilities are routed again.
- a graceful stop keeps queued work: tasks that end with `TaskCancelled` because the
  supervisor is shutting down are not recorded as ended, so they run after the restart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import trio

from .._sansio._errors import (
    DuplicateTaskId,
    GalaxyActorsError,
    JournalUnavailable,
    OutcomeUnknown,
    TaskCancelled,
    UnknownDevice,
    UnknownTask,
)
from ._admission import route
from ._journal import Commit, Journal, OpenTask, Outcome, Recovery, TaskRecord, gc_paused
from ._journal_handles import DELIVERY, Orphan, handle_of, record_of_handle
from ._task import Delivery, TaskHandle
from ._task_table import TaskTable

if TYPE_CHECKING:
    import os

    from ._device import DeviceActor
    from ._session import Session

__all__ = ["Durability"]

logger = logging.getLogger("galaxy_actors.journal")


class Durability:
    """One supervisor's use of one journal. Made by the supervisor when given a journal."""

    def __init__(self, supervisor: TaskTable, journal: Journal) -> None:
        self.supervisor = supervisor
        self.journal = journal
        self.recovery = Recovery()
        # Records of the journaled tasks still in the supervisor (`_live`), for idempotency.
        self._records: dict[str, TaskRecord] = {}
        # Recovered tasks waiting for their device to be added (or for a capable one).
        self._orphans: list[Orphan] = []
        self._closing = False
        # Released tasks whose outcome is not committed yet: the journal cannot answer for
        # them until it is, so fetching by id finds them here.
        self._settling: dict[str, TaskHandle] = {}
        # Tasks accepted as sent (going straight to an idle device) whose frame is yet to be
        # written: their "sent" is on disk already.
        self._sent_with_accept: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Before the supervisor's nursery: errors (corrupt, in use) come out as they are."""
        self.recovery = await self.journal.open()

    def start(self, nursery: trio.Nursery) -> None:
        """In the supervisor's nursery: start the writer and bring back the open tasks."""
        nursery.start_soon(self.journal.run, name="journal writer")
        self._recover(self.recovery.tasks)

    def closing(self) -> None:
        """The supervisor is shutting down: cancellations from now on are not outcomes."""
        self._closing = True

    # ------------------------------------------------------------------ submission

    async def submit(
        self,
        description: str,
        data: Mapping[str, Any] | None,
        device_id: str | None,
        capabilities: Collection[str] | None,
        task_id: str | None,
        timeout: float,  # noqa: ASYNC109 - the task's limit on its device, not this call's
        delivery: Delivery | str,
        priority: int,
    ) -> TaskHandle:
        """`Supervisor.submit` with a journal: returns once the task is on disk."""
        await trio.lowlevel.checkpoint_if_cancelled()
        sup = self.supervisor
        # Before the journal is read: once the supervisor has closed, so has its journal.
        sup._require_open()
        # An id the journal holds only (ended, its outcome retained) is found by the accept
        # itself, which then writes nothing: no read on the way of every new task.
        if task_id is not None:
            known = self._known(task_id, description, device_id)
            if known is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return known
        try:
            task, _ = sup._admit(
                description,
                data,
                device_id,
                capabilities,
                task_id,
                timeout,
                delivery,
                priority,
                accept=False,
            )
        except GalaxyActorsError:
            # A known id is answered whatever became of its device (or of the queue).
            if task_id is not None:
                stored = await self._stored(task_id, description, device_id)
                if stored is not None:
                    return stored
            raise
        record = TaskRecord(
            task.task_id,
            task.description,
            task.data_json,
            device_id,
            tuple(capabilities or ()),
            task.timeout,
            task.delivery,
            task.priority,
        )
        self._track(task, record)
        at_once = self._sends_at_once(task)
        commit = self.journal.accept(record, sent=at_once)
        try:
            await commit.wait()
        except trio.Cancelled:
            # The write may still land: the forget that follows it takes it back.
            self.journal.forget(task.task_id)
            self._untrack(task)
            raise
        if commit.error is not None:
            self._untrack(task)
            raise JournalUnavailable(
                f"task {task.task_id!r} not accepted: {commit.error}",
                task_id=task.task_id,
                device_id=task.device_id,
            )
        if commit.existed:
            self._untrack(task)
            stored = await self._stored(task.task_id, description, device_id)
            if stored is None:  # compacted in between: it was known, it is gone
                raise DuplicateTaskId(task.task_id, "was in the journal a moment ago")
            return stored
        try:
            session = self._accept(task, record)
            if session is None:
                if at_once:
                    # Its device was taken during the write: it waits in the queue.
                    self.journal.mark_queued(task.task_id)
            else:
                if at_once:
                    self._sent_with_accept.add(task.task_id)
                await sup._send_now(session, task)
        except BaseException:
            # Not accepted after all (its device went away during the write), or undone
            # (`Supervisor._send_now`, cancelled before the frame left): so is its record.
            self._sent_with_accept.discard(task.task_id)
            self.journal.forget(task.task_id)
            self._untrack(task)
            raise
        if not commit.waited:
            # A lone caller's commit is made at once, with no schedule point: this is the
            # one a submit makes (as without a journal), and a loop of submits lets the
            # other tasks run. Not one more: a commit shared with others waited already.
            await trio.lowlevel.cancel_shielded_checkpoint()
        return task

    def _sends_at_once(self, task: TaskHandle) -> bool:
        """Whether ``task`` is at-most-once and would go straight to its device's connection
        now (as `DeviceActor.accept` decides), so that its accept may carry its "sent" too.
        An at-least-once task's "sent" is lazy: nothing to save, and a device keeps at most
        one such task marked sent (recovery puts it back at the head)."""
        if task.delivery is not Delivery.AT_MOST_ONCE:
            return False
        actor = self.supervisor._actors.get(task.device_id or "")
        if actor is None or not actor.accepting or actor.work.mailbox:
            return False
        session = actor.session
        return session is not None and session.can_send_now()

    def _known(self, task_id: str, description: str, device_id: str | None) -> TaskHandle | None:
        """The task in this supervisor this id names, for an identical request; None if
        there is none."""
        task = self.supervisor._live.get(task_id) or self._unsettled(task_id)
        if task is None:
            return None
        record = self._records.get(task_id) or record_of_handle(task)
        if not record.same_request(description, device_id):
            raise DuplicateTaskId(task_id)
        return task

    async def _stored(
        self, task_id: str, description: str, device_id: str | None
    ) -> TaskHandle | None:
        """The task this id names in the journal (or, after the read, in this supervisor),
        for an identical request; None if there is none."""
        stored = await self.journal.fetch(task_id)
        known = self._known(task_id, description, device_id)  # submitted during the read
        if known is not None or stored is None:
            return known
        if not stored.record.same_request(description, device_id):
            raise DuplicateTaskId(task_id, "is in the journal for another task")
        return handle_of(stored.record, stored.outcome)

    async def fetch(self, task_id: str) -> TaskHandle:
        """The task with this id: live, or ended with a retained outcome."""
        task = self.supervisor._live.get(task_id) or self._unsettled(task_id)
        if task is not None:
            return task
        stored = await self.journal.fetch(task_id)
        task = self.supervisor._live.get(task_id)
        if task is not None:
            return task
        if stored is None:
            raise UnknownTask(task_id)
        return handle_of(stored.record, stored.outcome)

    def _track(self, task: TaskHandle, record: TaskRecord) -> None:
        task._journal = self
        task._on_released = self._released
        self._records[task.task_id] = record
        self.supervisor._live[task.task_id] = task

    def _untrack(self, task: TaskHandle) -> None:
        self._records.pop(task.task_id, None)
        self.supervisor._forget(task)

    def _released(self, task: TaskHandle) -> None:
        if self.supervisor._live.get(task.task_id) is task:
            self._records.pop(task.task_id, None)
            commit = task._ended_commit
            if commit is not None and not commit.done:
                settling = self._settling
                if len(settling) >= 1024:
                    for task_id in [i for i, t in settling.items() if t._ended_commit.done]:  # type: ignore[union-attr]
                        del settling[task_id]
                settling[task.task_id] = task
        self.supervisor._forget(task)

    def _unsettled(self, task_id: str) -> TaskHandle | None:
        task = self._settling.get(task_id)
        if task is not None and task._ended_commit is not None and task._ended_commit.done:
            del self._settling[task_id]
            return None
        return task

    def _accept(self, task: TaskHandle, record: TaskRecord) -> Session | None:
        """Hand a just-written task to its device, as `Supervisor._admit` would have."""
        sup = self.supervisor
        actor = sup._actors.get(task.device_id or "")
        if record.device_id is None and (actor is None or not actor.accepting):
            # Routed at admission to a device that left during the write: route again.
            actor = route(sup._actors.values(), record.capabilities, record.priority, task.task_id)
        if actor is None:
            raise UnknownDevice(record.device_id or "")
        return actor.accept(task)

    def _device_for(
        self, task: TaskHandle, device_id: str | None, capabilities: tuple[str, ...]
    ) -> DeviceActor | None:
        """Where a recovered task goes now; None: no device for it (yet)."""
        sup = self.supervisor
        if device_id is not None:
            actor = sup._actors.get(device_id)
            return actor if actor is not None and not actor.removed else None
        try:
            return route(sup._actors.values(), capabilities, task.priority, task.task_id)
        except GalaxyActorsError:
            return None

    # ------------------------------------------------------------------ the hooks

    async def sent(self, task: TaskHandle, session: Session, *, by_caller: bool) -> bool:
        """`Session.send_task`, after the task is marked on the device and before its frame
        is written: False if the frame must not be written (the task is then off the
        device again, and ended). Cancelled while waiting: the frame is not written, as
        when a frame-safe send is cancelled (`Session._not_sent`)."""
        if self._sent_with_accept:
            try:
                self._sent_with_accept.remove(task.task_id)
            except KeyError:
                pass
            else:
                return True  # written with its accept
        commit = self.journal.mark_sent(task.task_id)
        if task.delivery is Delivery.AT_LEAST_ONCE:
            return True  # lazily: a crash before it lands only loses the task's place
        try:
            await commit.wait()
        except trio.Cancelled:
            session.engine.unsend_task(task.task_id)
            session.host.task_not_sent(task, by_caller=by_caller)
            raise
        if commit.error is None:
            return True
        session.engine.unsend_task(task.task_id)
        session.host.task_not_sent(task, by_caller=True)  # off the device, not queued again
        # The device is free, and no frame will come to make the loop look at its queue:
        # wake it once it is back in its receive (it resets its deadline on the way).
        nursery = self.supervisor._nursery
        if nursery is not None:
            nursery.start_soon(_wake_soon, session)
        error = JournalUnavailable(
            f"task {task.task_id!r} not sent: the journal cannot record it: {commit.error}",
            task_id=task.task_id,
            device_id=task.device_id,
        )
        actor = self.supervisor._actors.get(task.device_id or "")
        if actor is not None:
            actor.work.end(task, error)
        else:
            task._resolve(error, trio.current_time())
        return False

    def ended(self, task: TaskHandle, outcome: Outcome) -> Commit | None:
        """`TaskHandle._resolve`: record the outcome; the handle's waiters wait for it."""
        if self._closing and isinstance(outcome, TaskCancelled):
            return None  # a graceful stop: the task stays open, to run after the restart
        # A caller waiting in `TaskHandle.wait` commits it as soon as it wakes (or, if it is
        # cancelled first, hands it to the writer): no need to wake the writer too.
        awaited = task._done.statistics().tasks_waiting > 0
        return self.journal.mark_ended(task.task_id, outcome, awaited=awaited)

    # ------------------------------------------------------------------ devices

    def device_added(self, actor: DeviceActor) -> None:
        """`Supervisor.add_device`: queue the recovered tasks that were waiting for it."""
        if self._orphans:
            self._adopt()

    async def record_device(self, device_id: str, spec: Mapping[str, Any] | None) -> None:
        """A runtime registration (``spec``) or removal (None), durable on return."""
        if spec is None:
            commit = self.journal.device_removed(device_id)
        else:
            commit = self.journal.device_added(device_id, spec)
        await commit.wait()
        if commit.error is not None:
            logger.error("journal: device %s not recorded: %s", device_id, commit.error)

    async def restore_devices(self) -> None:
        """Apply the runtime registrations and removals the journal holds (the process,
        after adding its configuration's devices): a restart brings the same fleet back."""
        sup = self.supervisor
        for device in self.recovery.devices:
            present = device.device_id in sup.device_ids
            if device.removed and present:
                await sup.remove_device(device.device_id, force=True)
            elif not device.removed and not present:
                spec = device.spec
                try:
                    sup.add_device(
                        device.device_id,
                        spec["url"],
                        spec.get("os", "unknown"),
                        capabilities=spec.get("capabilities"),
                        metadata=spec.get("metadata"),
                        max_retries=spec.get("max_retries"),
                    )
                except (GalaxyActorsError, KeyError) as exc:
                    logger.error("journal: device %s not restored: %s", device.device_id, exc)

    # ------------------------------------------------------------------ recovery

    def _recover(self, tasks: Sequence[OpenTask]) -> None:
        now = trio.current_time()
        unknown = 0
        live = self.supervisor._live
        orphans = self._orphans
        with gc_paused():
            for row in tasks:
                task_id, description, data_json, device_id, caps, timeout, how, prio, sent = row
                delivery = DELIVERY[how]
                task = TaskHandle(
                    task_id,
                    description,
                    data_json,
                    timeout=timeout,
                    delivery=delivery,
                    priority=prio,
                    submitted_at=now,
                )
                task.device_id = device_id
                task._journal = self
                task._on_released = self._released
                live[task_id] = task
                capabilities = () if caps == "[]" else tuple(json.loads(caps))
                if device_id is None:
                    # Routed again: its handle will name a device, the request named none.
                    self._records[task_id] = TaskRecord(
                        task_id, description, data_json, None, capabilities, timeout,
                        delivery, prio,
                    )  # fmt: skip
                if sent and delivery is Delivery.AT_MOST_ONCE:
                    unknown += 1
                    task._resolve(
                        OutcomeUnknown(
                            f"task {task_id!r} was sent to device {device_id!r} and the "
                            "supervisor stopped before its end was recorded: it may or may "
                            "not have run, and is not sent again",
                            task_id=task_id,
                            device_id=device_id,
                        ),
                        now,
                    )
                else:
                    orphans.append((task, device_id, capabilities, bool(sent)))
        if tasks:
            logger.warning(
                "journal: recovered %d open tasks (%d ended OutcomeUnknown)", len(tasks), unknown
            )
        self._adopt()

    def _adopt(self) -> None:
        waiting: list[Orphan] = []
        woken: set[DeviceActor] = set()
        # Queued ones in submission order, then the ones that were on a device, each to the
        # head of its queue (at most one per device was).
        orphans = self._orphans
        ordered = [o for o in orphans if not o[3]] + [o for o in orphans if o[3]]
        with gc_paused():
            for orphan in ordered:
                task, device_id, capabilities, sent = orphan
                if task.done:
                    continue
                actor = self._device_for(task, device_id, capabilities)
                if actor is None:
                    waiting.append(orphan)
                    continue
                task.device_id = actor.device_id
                if sent:
                    actor.work.requeue(task)
                else:
                    actor.work.queue(task)
                woken.add(actor)
        for actor in woken:
            session = actor.session
            if session is not None:
                session._wake()  # an idle device's loop looks at its queue again
        self._orphans = waiting

    @property
    def waiting(self) -> list[TaskHandle]:
        """Recovered tasks whose device is not registered (yet)."""
        return [orphan[0] for orphan in self._orphans]


async def _wake_soon(session: Session) -> None:
    await trio.lowlevel.checkpoint()
    session._wake()


def journal_of(journal: Journal | str | os.PathLike[str]) -> Journal:
    """``journal`` itself, or the `SqliteJournal` at that path."""
    # Imported here: a supervisor without a journal never loads sqlite3.
    if isinstance(journal, str) or hasattr(journal, "__fspath__"):
        from ._journal_sqlite import SqliteJournal

        return SqliteJournal(journal)  # type: ignore[arg-type]
    return journal
