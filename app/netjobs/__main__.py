"""`python -m netjobs ...` is the `netjobs` command."""

import sys

from netjobs.cli import main

sys.exit(main())
