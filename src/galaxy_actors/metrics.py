"""Prometheus metrics of a supervisor, for programs that embed one.

Needs the ``metrics`` extra (``pip install 'galaxy-actors[metrics]'``); importing this module
without prometheus-client raises an ImportError that says so. The metric names and what they
count are listed in docs/process.md, "Metrics and health"; the supervisor process serves the
same metrics on its ``[metrics]`` listener.

Register the collector in your own registry, and expose it however your program does::

    from prometheus_client import CollectorRegistry, generate_latest
    from galaxy_actors import open_supervisor
    from galaxy_actors.metrics import collecting

    registry = CollectorRegistry()
    async with open_supervisor() as supervisor, collecting(supervisor, registry):
        supervisor.add_device("pc-1", "ws://agents.example:5000/ws")
        ...
        text = generate_latest(registry)  # from a Trio task: the collector reads the
                                          # supervisor, which lives on Trio's thread

`collecting` runs a `SupervisorCollector` for its block. To own the task yourself, register
a `SupervisorCollector` and start its ``run`` in a nursery of yours.
"""

from ._process._metrics import DURATION_BUCKETS as DURATION_BUCKETS
from ._process._metrics import SupervisorCollector as SupervisorCollector
from ._process._metrics import collecting as collecting
from ._public import fixup_module_metadata

__all__ = ["DURATION_BUCKETS", "SupervisorCollector", "collecting"]

fixup_module_metadata(__name__, globals(), __all__)
del fixup_module_metadata
