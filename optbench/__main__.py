"""`python -m optbench ...` is the same as `optbench ...`."""

import sys

from optbench.cli import main

sys.exit(main())
