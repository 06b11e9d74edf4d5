"""``python -m monitor.cli``, as ``driftgate``."""

import sys

from . import main

sys.exit(main())
