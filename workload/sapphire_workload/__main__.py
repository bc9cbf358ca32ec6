"""`python -m sapphire_workload`."""

import sys

from sapphire_workload.cli import main

sys.exit(main())
