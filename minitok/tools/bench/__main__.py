"""`python -m minitok.bench`: every lesson's benchmark in one table (see minitok/tools/bench/__init__.py)."""

import sys

from minitok.tools.bench import main

sys.exit(main())
