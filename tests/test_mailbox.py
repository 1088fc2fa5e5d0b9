"""A device's mailbox: run order, withdrawals, accounting. No Trio needed."""

from __future__ import annotations

from collections import deque
from itertools import count

from hypothesis import given, settings
from hypothesis import strategies as st

from galaxy_actors._actors._mailbox import Mailbox
from galaxy_actors._actors._task import Delivery, TaskHandle
from galaxy_actors._sansio._errors import TaskCancelled

_ids = count()


def task(name: str | None = None, priority: int = 0) -> TaskHandle:
    return TaskHandle(
        name if name is not None else f"t{next(_ids)}",
        "desc",
        "{}",
        timeout=10.0,
        delivery=Delivery.AT_MOST_ONCE,
        priority=priority,
        submitted_at=0.0,
    )


def withdraw(mailbox: Mailbox, handle: TaskHandle) -> None:
    """End a queued task the way a cancellation does, and tell the mailbox."""
    assert handle._resolve(TaskCancelled("withdrawn", task_id=handle.task_id, device_id=None), 0.0)
    mailbox.withdrawn(handle)


def ids(tasks: object) -> list[str]:
    return [t.task_id for t in tasks]  # type: ignore[attr-defined]


def pop_all(mailbox: Mailbox) -> list[str]:
    out = []
    while (t := mailbox.pop()) is not None:
        out.append(t.task_id)
    return out


def test_empty_mailbox() -> None:
    mailbox = Mailbox()
    assert len(mailbox) == 0
    assert not mailbox
    assert mailbox.pop() is None
    assert list(mailbox) == []
    assert mailbox.depth_by_priority() == {}
    assert list(mailbox.drain()) == []


def test_equal_priority_is_fifo() -> None:
    mailbox = Mailbox()
    for name in ["a", "b", "c", "d"]:
        mailbox.push(task(name))
    assert len(mailbox) == 4
    assert mailbox
    assert pop_all(mailbox) == ["a", "b", "c", "d"]
    assert len(mailbox) == 0
    assert not mailbox


def test_lower_priority_number_runs_first() -> None:
    mailbox = Mailbox()
    mailbox.push(task("low-1", priority=5))
    mailbox.push(task("high-1", priority=-1))
    mailbox.push(task("mid-1", priority=0))
    mailbox.push(task("high-2", priority=-1))
    mailbox.push(task("low-2", priority=5))
    mailbox.push(task("mid-2", priority=0))
    assert pop_all(mailbox) == ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]


def test_push_front_goes_ahead_of_its_priority_but_behind_a_lower_number() -> None:
    mailbox = Mailbox()
    mailbox.push(task("urgent", priority=0))
    mailbox.push(task("a", priority=1))
    mailbox.push(task("b", priority=1))
    mailbox.push(task("later", priority=2))
    mailbox.push_front(task("again", priority=1))
    assert pop_all(mailbox) == ["urgent", "again", "a", "b", "later"]


def test_newest_push_front_runs_first() -> None:
    mailbox = Mailbox()
    mailbox.push(task("queued"))
    mailbox.push_front(task("first-back"))
    mailbox.push_front(task("second-back"))
    assert pop_all(mailbox) == ["second-back", "first-back", "queued"]


def test_a_popped_task_put_back_runs_next() -> None:
    # At-least-once: the task that was on the device when the connection died runs again
    # before anything queued behind it.
    mailbox = Mailbox()
    for name in ["a", "b", "c"]:
        mailbox.push(task(name))
    running = mailbox.pop()
    assert running is not None
    running._mark_sent(1.0)
    running._requeue()
    mailbox.push_front(running)
    assert len(mailbox) == 3
    assert pop_all(mailbox) == ["a", "b", "c"]


def test_withdrawn_tasks_are_skipped_and_len_stays_right() -> None:
    mailbox = Mailbox()
    handles = [task(name) for name in ["a", "b", "c", "d"]]
    for handle in handles:
        mailbox.push(handle)
    withdraw(mailbox, handles[0])
    withdraw(mailbox, handles[2])
    assert len(mailbox) == 2
    assert ids(mailbox) == ["b", "d"]
    assert mailbox.pop() is handles[1]
    assert len(mailbox) == 1
    assert mailbox.pop() is handles[3]
    assert len(mailbox) == 0
    assert not mailbox
    assert mailbox.pop() is None
    assert len(mailbox) == 0


def test_withdrawing_every_task_empties_the_mailbox() -> None:
    mailbox = Mailbox()
    handles = [task(priority=p) for p in (0, 1, 1, 2)]
    for handle in handles:
        mailbox.push(handle)
    for handle in handles:
        withdraw(mailbox, handle)
    assert len(mailbox) == 0
    assert not mailbox
    assert mailbox.depth_by_priority() == {}
    assert mailbox.pop() is None


def test_withdrawn_task_keeps_its_cancellation_outcome() -> None:
    mailbox = Mailbox()
    handle = task("a")
    mailbox.push(handle)
    withdraw(mailbox, handle)
    assert handle.done
    assert isinstance(handle.outcome, TaskCancelled)
    assert mailbox.pop() is None


def test_depth_by_priority() -> None:
    mailbox = Mailbox()
    handles = {p: [task(priority=p) for _ in range(n)] for p, n in [(3, 2), (-1, 1), (0, 3)]}
    for group in handles.values():
        for handle in group:
            mailbox.push(handle)
    depth = mailbox.depth_by_priority()
    assert depth == {-1: 1, 0: 3, 3: 2}
    assert list(depth) == [-1, 0, 3]  # sorted by priority
    withdraw(mailbox, handles[-1][0])
    assert mailbox.depth_by_priority() == {0: 3, 3: 2}
    mailbox.pop()
    assert mailbox.depth_by_priority() == {0: 2, 3: 2}
    mailbox.push_front(task(priority=3))
    assert mailbox.depth_by_priority() == {0: 2, 3: 3}
    assert sum(mailbox.depth_by_priority().values()) == len(mailbox)


def test_depth_by_priority_is_a_copy() -> None:
    mailbox = Mailbox()
    mailbox.push(task(priority=1))
    depth = mailbox.depth_by_priority()
    depth[1] = 99
    assert mailbox.depth_by_priority() == {1: 1}


def test_drain_yields_every_live_task_in_order_and_empties() -> None:
    mailbox = Mailbox()
    handles = {name: task(name, priority=p) for name, p in
               [("a", 1), ("b", 0), ("c", 1), ("d", 0), ("e", 2)]}  # fmt: skip
    for handle in handles.values():
        mailbox.push(handle)
    mailbox.push_front(task("f", priority=1))
    withdraw(mailbox, handles["d"])
    assert ids(mailbox.drain()) == ["b", "f", "a", "c", "e"]
    assert len(mailbox) == 0
    assert mailbox.depth_by_priority() == {}
    assert mailbox.pop() is None


def test_drain_lets_the_caller_end_each_task() -> None:
    # The disconnect path: drain and cancel every queued task as it comes out.
    mailbox = Mailbox()
    handles = [task() for _ in range(3)]
    for handle in handles:
        mailbox.push(handle)
    for handle in mailbox.drain():
        handle._resolve(TaskCancelled("bye", task_id=handle.task_id, device_id=None), 1.0)
    assert all(h.done for h in handles)
    assert len(mailbox) == 0


def test_iteration_shows_run_order_without_consuming() -> None:
    mailbox = Mailbox()
    mailbox.push(task("a", priority=1))
    mailbox.push(task("b", priority=0))
    mailbox.push_front(task("c", priority=1))
    assert ids(mailbox) == ["b", "c", "a"]
    assert ids(mailbox) == ["b", "c", "a"]
    assert len(mailbox) == 3
    # Ending tasks while iterating is safe.
    for handle in mailbox:
        withdraw(mailbox, handle)
    assert len(mailbox) == 0
    assert list(mailbox) == []


# --------------------------------------------------------------------------- property

priorities = st.integers(min_value=-2, max_value=2)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), priorities),
        st.tuples(st.just("push_front"), priorities),
        st.tuples(st.just("withdraw"), st.integers(min_value=0, max_value=1000)),
        st.tuples(st.just("pop"), st.just(0)),
        st.tuples(st.just("requeue"), st.just(0)),
    ),
    max_size=60,
)


class ReferenceMailbox:
    """One deque per priority: push appends, push_front prepends, pop takes the head of the
    lowest priority number."""

    def __init__(self) -> None:
        self.queues: dict[int, deque[TaskHandle]] = {}

    def push(self, handle: TaskHandle) -> None:
        self.queues.setdefault(handle.priority, deque()).append(handle)

    def push_front(self, handle: TaskHandle) -> None:
        self.queues.setdefault(handle.priority, deque()).appendleft(handle)

    def remove(self, handle: TaskHandle) -> None:
        self.queues[handle.priority].remove(handle)

    def order(self) -> list[TaskHandle]:
        return [h for p in sorted(self.queues) for h in self.queues[p]]

    def pop(self) -> TaskHandle | None:
        order = self.order()
        if not order:
            return None
        self.remove(order[0])
        return order[0]

    def depth(self) -> dict[int, int]:
        return {p: len(q) for p, q in sorted(self.queues.items()) if q}


@settings(max_examples=200)
@given(operations)
def test_property_pop_order_matches_the_reference_model(
    ops: list[tuple[str, int]],
) -> None:
    mailbox = Mailbox()
    model = ReferenceMailbox()
    popped: list[TaskHandle] = []
    for op, arg in ops:
        if op == "push":
            handle = task(priority=arg)
            mailbox.push(handle)
            model.push(handle)
        elif op == "push_front":
            handle = task(priority=arg)
            mailbox.push_front(handle)
            model.push_front(handle)
        elif op == "withdraw":
            live = model.order()
            if live:
                victim = live[arg % len(live)]
                withdraw(mailbox, victim)
                model.remove(victim)
        elif op == "pop":
            got = mailbox.pop()
            assert got is model.pop()
            if got is not None:
                assert not got.done
                popped.append(got)
        elif op == "requeue" and popped:
            # At-least-once: a task taken off the queue comes back at the head.
            handle = popped.pop()
            handle._requeue()
            mailbox.push_front(handle)
            model.push_front(handle)
        assert len(mailbox) == len(model.order())
        assert bool(mailbox) == bool(model.order())
        assert mailbox.depth_by_priority() == model.depth()
        assert list(mailbox) == model.order()
    assert list(mailbox.drain()) == model.order()
    assert len(mailbox) == 0
    assert mailbox.pop() is None


# --------------------------------------------------------------------------- memory


def test_withdrawn_tasks_do_not_pile_up_in_the_heap() -> None:
    # An outage: callers give up one after another while their tasks wait. The heap holds
    # at most as many withdrawn entries as live ones (plus the one just withdrawn).
    mailbox = Mailbox()
    keep = [task(f"keep{i}") for i in range(3)]
    for handle in keep:
        mailbox.push(handle)
    biggest = 0
    for _ in range(20_000):
        handle = task()
        mailbox.push(handle)
        withdraw(mailbox, handle)
        biggest = max(biggest, len(mailbox._heap))
    assert biggest <= 2 * len(keep) + 2
    assert len(mailbox) == 3
    assert pop_all(mailbox) == ["keep0", "keep1", "keep2"]


def test_withdrawing_a_whole_backlog_lets_it_go() -> None:
    mailbox = Mailbox()
    handles = [task(priority=i % 3) for i in range(5_000)]
    for handle in handles:
        mailbox.push(handle)
    for handle in handles[::2]:
        withdraw(mailbox, handle)
    assert len(mailbox._heap) <= 2 * len(mailbox) + 1
    for handle in handles[1::2]:
        withdraw(mailbox, handle)
    assert len(mailbox) == 0
    assert len(mailbox._heap) <= 1
    assert mailbox.pop() is None
