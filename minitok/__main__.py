import sys

from minitok.cli import main

sys.exit(main())
