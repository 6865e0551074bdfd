"""Install torch's CPU build (`make setup` runs this before installing minitok).

    python scripts/install_torch.py torch==2.13.0            # what the Makefile does
    python scripts/install_torch.py torch==2.13.0 --dry-run  # say what would happen

On Linux, PyPI's torch is the CUDA build: several GB of NVIDIA libraries the course never
uses. So on Linux torch comes from PyTorch's CPU wheel index (TORCH_INDEX, default
https://download.pytorch.org/whl/cpu). When that index cannot be reached (an offline
mirror, a firewall), one line says so and torch comes from pip's default index instead,
whatever that serves. On macOS and Windows PyPI's torch is the CPU build already.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import urllib.error
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def reachable(url: str, timeout: float = 10.0) -> bool:
    """Whether the index answers at all (any HTTP answer, even an error page, counts)."""
    try:
        urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirement", help="e.g. torch==2.13.0")
    parser.add_argument("--dry-run", action="store_true", help="pass --dry-run to pip")
    args = parser.parse_args(argv)
    pip = [sys.executable, "-m", "pip", "install", *(["--dry-run"] if args.dry_run else [])]
    index = os.environ.get("TORCH_INDEX", CPU_INDEX)
    if sys.platform.startswith("linux"):
        if reachable(index):
            print(f"install_torch: {args.requirement}, CPU build, from {index}", flush=True)
            return subprocess.call([*pip, "--index-url", index, args.requirement])
        print(f"install_torch: cannot reach PyTorch's CPU index {index}; installing "
              f"{args.requirement} from pip's default index instead (on Linux PyPI serves the "
              f"CUDA build, several GB: set TORCH_INDEX to a CPU mirror to avoid it)", flush=True)
    return subprocess.call([*pip, args.requirement])


if __name__ == "__main__":
    sys.exit(main())
