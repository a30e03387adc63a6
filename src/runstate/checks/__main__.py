"""``python -m runstate.checks``: the synthetic agent (see :mod:`.synthetic`)."""

import sys

from runstate.checks.synthetic import main

sys.exit(main())
