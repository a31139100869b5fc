"""`python -m bench [--quick] [--only P3,P7] [--output FILE]`: see bench/README.md."""

from bench.cli import main

raise SystemExit(main())
