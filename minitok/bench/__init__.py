"""`python -m minitok.bench[.<name>]`: the benchmarks live in minitok/tools/bench/.

This name stays because it is the command people type; the package it names is
minitok.tools.bench, whose folder this one's submodules are found in.
"""

import sys

from minitok.tools import bench

sys.modules[__name__] = bench
