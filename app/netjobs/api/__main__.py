import sys

from netjobs.api import main

sys.exit(main())
