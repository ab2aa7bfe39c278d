"""python -m featrank …: the command line of main.py (config: --config FILE, else run_plan.DEFAULT_CONFIG)."""
import sys

from featrank.cli import main

sys.exit(main())
