import sys

from minitok.tools.cli import main

sys.exit(main())
