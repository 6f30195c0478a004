"""`python -m nicotask` and the `nicotask` console script: see nicotask.cli."""

from __future__ import annotations

import sys

from nicotask.cli import main

if __name__ == "__main__":
    sys.exit(main())
