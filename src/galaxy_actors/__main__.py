"""``python -m galaxy_actors``: the ``galaxy-actors`` console command."""

import sys

from ._process._cli import main

sys.exit(main())
