"""`python -m bench [--quick] [--only P3,P7] [--output FILE]`: see the README, "Testing",
and the docstring of each figure's module (`bench/p1_push_latency.py` ... `p9_cli_startup.py`)."""

from bench.cli import main

raise SystemExit(main())
