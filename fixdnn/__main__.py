"""``python -m fixdnn``: the same entry point as the ``fixdnn`` script."""

import sys

from fixdnn.cli import main

sys.exit(main())
