"""`python -m minitok.bench[.<name>]`: the benchmarks, which live in minitok/tools/bench/.

The name stays because it is the command people type: imported, this module stands for
minitok.tools.bench (so minitok.bench.<name> finds its submodules); run, it runs them all.
"""

import sys

from minitok.tools import bench

if __name__ == "__main__":
    sys.exit(bench.main())
sys.modules[__name__] = bench
