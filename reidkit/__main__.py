"""``python -m reidkit``: the ``reidkit`` command (see :mod:`reidkit.cli`)."""

import sys

from reidkit.cli import main

sys.exit(main())
