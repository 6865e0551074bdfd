"""`python -m minitok.bench`: every lesson's benchmark in one table (see minitok/bench/__init__.py)."""

import sys

from minitok.bench import main

sys.exit(main())
