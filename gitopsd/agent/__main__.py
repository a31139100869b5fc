"""`python -m gitopsd.agent`: the agent without the rest of the CLI (same flags)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gitopsd.agent.main import run_agent
from gitopsd.agent.settings import AgentSettings, parse_labels, parse_listen
from gitopsd.errors import GitopsdError
from gitopsd.log import configure


def main(argv: list[str] | None = None) -> int:
    """Parse the flags of `gitopsd agent` and run until SIGTERM/SIGINT; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m gitopsd.agent", description=__doc__)
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--name", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--memory-mib", type=int, default=1024)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--controller", default=None, metavar="URL")
    args = parser.parse_args(argv)
    configure(args.log_level)
    try:
        host, port = parse_listen(args.listen)
        settings = AgentSettings(
            name=args.name,
            region=args.region,
            labels=parse_labels(args.label),
            host=host,
            port=port,
            data_dir=args.data_dir,
            token_file=args.token_file,
            memory_mib=args.memory_mib,
            controller=args.controller,
        )
        run_agent(settings)
    except GitopsdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
