"""Lifecycle events of a supervisor: ``with supervisor.subscribe() as events``.

Every event is a frozen value with ``at`` (Trio's clock) and ``seq`` (its number in the
supervisor's stream: a gap between two events a subscriber received is events dropped for
it). Reasons, bad-frame kinds and task outcomes are enums (`FailureReason`, `BadFrameKind`,
`TaskOutcome`) whose values are the texts of the JSON log and the ``watch`` stream.
"""

from ._events import BadFrame as BadFrame
from ._events import ConnectionFailed as ConnectionFailed
from ._events import DeviceAdded as DeviceAdded
from ._events import DeviceRemoved as DeviceRemoved
from ._events import Event as Event
from ._events import RestartScheduled as RestartScheduled
from ._events import RestartsStopped as RestartsStopped
from ._events import StatusChanged as StatusChanged
from ._events import Subscription as Subscription
from ._events import TaskEnded as TaskEnded
from ._events import TaskQueued as TaskQueued
from ._events import TaskSent as TaskSent
from ._public import fixup_module_metadata
from ._reasons import BadFrameKind as BadFrameKind
from ._reasons import FailureReason as FailureReason
from ._reasons import TaskOutcome as TaskOutcome

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
