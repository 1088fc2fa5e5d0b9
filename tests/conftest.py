"""Suite-wide Hypothesis profiles; choose one with ``HYPOTHESIS_PROFILE=<name>`` or ``pytest
--hypothesis-profile=<name>`` (``ci`` when the ``CI`` environment variable is set, ``dev``
otherwise).

- ``dev``: random examples; failures saved in ``.hypothesis/`` and replayed first next time,
  with a ``@reproduce_failure`` blob printed.
- ``ci``: derandomized, so a CI failure reproduces by running the same command; no database;
  blob printed; no ``explain`` phase (it traces every line of a scenario, and turns a
  seconds-long shrink into minutes).

The property tests (tests/test_properties.py) do not depend on this file: they follow a
derandomized profile, and otherwise print the seed of their search.
"""

from __future__ import annotations

import os

from hypothesis import Phase, settings

# The `redis_server` fixture of the cluster tests (a real server; tests/redis_server.py).
pytest_plugins = ["redis_server"]

settings.register_profile("dev", print_blob=True)
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
