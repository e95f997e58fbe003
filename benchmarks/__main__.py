"""``python -m benchmarks``: run the benchmark suite (see ``--help``)."""

import sys

from .cli import main

sys.exit(main())
