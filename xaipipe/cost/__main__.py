"""``python -m xaipipe.cost``."""

import sys

from xaipipe.cost.cli import main

sys.exit(main())
