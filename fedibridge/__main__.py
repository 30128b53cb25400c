"""`python -m fedibridge` does what the `fedibridge` console script does."""

import sys

from .cli import main

sys.exit(main())
