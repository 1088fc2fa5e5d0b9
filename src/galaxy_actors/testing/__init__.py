"""What users need to test their own code against galaxy_actors.

`SimulatedAgent` is an AIP agent server with scripted faults, served on loopback or on an
in-memory `MemoryNetwork` for virtual-time tests.

Property-tested reconnection scenarios (see ``docs/testing.md``): a `FaultSchedule` says what
goes wrong on which device and when; `run_scenario` plays it against a supervisor in virtual
time and returns a `Trace`; `check_invariants` proves the library's invariants on it. The
Hypothesis strategies `fault_schedules` and `restart_policies` draw schedules and policies;
they are imported from here on first use only, so Hypothesis stays a test-time dependency.
"""

from typing import TYPE_CHECKING, Any

from .._public import fixup_module_metadata
from .._transports._memory import MemoryNetwork as MemoryNetwork
from ._agent import ReceivedFrame as ReceivedFrame
from ._agent import SimulatedAgent as SimulatedAgent
from ._agent import default_device_info as default_device_info
from ._faults import Action as Action
from ._faults import CancelTask as CancelTask
from ._faults import Connect as Connect
from ._faults import DelayTaskEnd as DelayTaskEnd
from ._faults import DeviceSchedule as DeviceSchedule
from ._faults import Disconnect as Disconnect
from ._faults import DropConnection as DropConnection
from ._faults import Fault as Fault
from ._faults import FaultSchedule as FaultSchedule
from ._faults import LoseTaskEnd as LoseTaskEnd
from ._faults import MalformedFrame as MalformedFrame
from ._faults import RefuseConnections as RefuseConnections
from ._faults import RejectRegistration as RejectRegistration
from ._faults import RejectTasks as RejectTasks
from ._faults import StaleTaskEnd as StaleTaskEnd
from ._faults import StallHeartbeats as StallHeartbeats
from ._faults import TaskSubmission as TaskSubmission
from ._harness import run_scenario as run_scenario
from ._harness import run_scenario_async as run_scenario_async
from ._invariants import InvariantViolation as InvariantViolation
from ._invariants import check_invariants as check_invariants
from ._invariants import find_violations as find_violations
from ._progress import ScenarioStalled as ScenarioStalled
from ._restart_invariants import PolicyModel as PolicyModel
from ._trace import SCENARIO_SUPERVISOR as SCENARIO_SUPERVISOR
from ._trace import ActorTask as ActorTask
from ._trace import AgentFrame as AgentFrame
from ._trace import LogLine as LogLine
from ._trace import ScenarioSettings as ScenarioSettings
from ._trace import TaskRecord as TaskRecord
from ._trace import Trace as Trace
from ._trace import WireRecord as WireRecord
from ._violations import INVARIANTS as INVARIANTS
from ._violations import Violation as Violation

if TYPE_CHECKING:
    from ._strategies import EXTRA_FAULT_KINDS as EXTRA_FAULT_KINDS
    from ._strategies import FAULT_KINDS as FAULT_KINDS
    from ._strategies import actions as actions
    from ._strategies import fault_schedules as fault_schedules
    from ._strategies import faults as faults
    from ._strategies import restart_policies as restart_policies
    from ._strategies import task_submissions as task_submissions

# Names served by `__getattr__`: importing them imports Hypothesis.
_STRATEGIES = frozenset(
    {
        "EXTRA_FAULT_KINDS",
        "FAULT_KINDS",
        "actions",
        "fault_schedules",
        "faults",
        "restart_policies",
        "task_submissions",
    }
)


def __getattr__(name: str) -> Any:
    if name in _STRATEGIES:
        from . import _strategies

        return getattr(_strategies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The strategies are left out on purpose: ``import *`` must not import Hypothesis.
__all__ = [
    "INVARIANTS",
    "SCENARIO_SUPERVISOR",
    "Action",
    "ActorTask",
    "AgentFrame",
    "CancelTask",
    "Connect",
    "DelayTaskEnd",
    "DeviceSchedule",
    "Disconnect",
    "DropConnection",
    "Fault",
    "FaultSchedule",
    "InvariantViolation",
    "LogLine",
    "LoseTaskEnd",
    "MalformedFrame",
    "MemoryNetwork",
    "PolicyModel",
    "ReceivedFrame",
    "RefuseConnections",
    "RejectRegistration",
    "RejectTasks",
    "ScenarioSettings",
    "ScenarioStalled",
    "SimulatedAgent",
    "StaleTaskEnd",
    "StallHeartbeats",
    "TaskRecord",
    "TaskSubmission",
    "Trace",
    "Violation",
    "WireRecord",
    "check_invariants",
    "default_device_info",
    "find_violations",
    "run_scenario",
    "run_scenario_async",
]

fixup_module_metadata(__name__, globals(), __all__)
del fixup_module_metadata
