"""`python -m bench`: the `bench` command (torchrun starts it this way)."""

import sys

from bench.cli import main

sys.exit(main())
