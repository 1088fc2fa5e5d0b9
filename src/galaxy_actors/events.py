"""Lifecycle events of a supervisor: ``with supervisor.subscribe() as events``.

Every event is a frozen value with ``at`` (Trio's clock) and ``seq`` (its number in the
supervisor's stream: a gap between two events a subscriber received is events dropped for
it). Reasons, bad-frame kinds and task outcomes are enums (`FailureReason`, `BadFrameKind`,
`TaskOutcome`) whose values are the texts of the JSON log and the ``watch`` stream.
"""

from ._actors._events import BadFrame as BadFrame
from ._actors._events import ConnectionFailed as ConnectionFailed
from ._actors._events import DeviceAdded as DeviceAdded
from ._actors._events import DeviceRemoved as DeviceRemoved
from ._actors._events import Event as Event
from ._actors._events import RestartScheduled as RestartScheduled
from ._actors._events import RestartsStopped as RestartsStopped
from ._actors._events import StatusChanged as StatusChanged
from ._actors._events import Subscription as Subscription
from ._actors._events import TaskEnded as TaskEnded
from ._actors._events import TaskQueued as TaskQueued
from ._actors._events import TaskSent as TaskSent
from ._public import fixup_module_metadata
from ._sansio._reasons import BadFrameKind as BadFrameKind
from ._sansio._reasons import FailureReason as FailureReason
from ._sansio._reasons import TaskOutcome as TaskOutcome

__all__ = [
    "BadFrame",
    "BadFrameKind",
    "ConnectionFailed",
    "DeviceAdded",
    "DeviceRemoved",
    "Event",
    "FailureReason",
    "RestartScheduled",
    "RestartsStopped",
    "StatusChanged",
    "Subscription",
    "TaskEnded",
    "TaskOutcome",
    "TaskQueued",
    "TaskSent",
]

fixup_module_metadata(__name__, globals(), __all__)
del fixup_module_metadata
