"""``python -m runstate.retention.checks``: the synthetic agent (see :mod:`.synthetic`)."""

import sys

from runstate.retention.checks.synthetic import main

sys.exit(main())
