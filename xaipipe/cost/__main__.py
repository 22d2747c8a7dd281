"""``python -m xaipipe.cost``. Guarded: the fork server imports every ``xaipipe`` module."""

import sys

from xaipipe.cost.cli import main

if __name__ == "__main__":
    sys.exit(main())
