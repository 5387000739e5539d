"""`python -m genlab.cli`: the same as the `genlab` command."""

import sys

from genlab.cli import main

sys.exit(main())
