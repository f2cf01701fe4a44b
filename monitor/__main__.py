"""`python -m monitor`."""

import sys

from monitor.commands.cli import main

sys.exit(main())
