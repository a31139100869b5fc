"""Run `gitopsd` commands in-process, as a user would type them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from gitopsd.cli.main import cli


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Gitopsd:
    """`gitopsd ...` with a state dir and the fleet's token file."""

    def __init__(
        self, state_dir: Path, token_file: Path | None = None, config: Path | None = None
    ) -> None:
        self.state_dir = state_dir
        self.token_file = token_file
        self.config = config

    def __call__(self, *args: str) -> Result:
        extra = ["--state-dir", str(self.state_dir)]
        if self.token_file is not None:
            extra += ["--agent-token-file", str(self.token_file)]
        if self.config is not None:
            extra += ["--config", str(self.config)]
        argv = [args[0], *args[1:], *extra]
        res = CliRunner().invoke(cli, argv, catch_exceptions=False)
        return Result(res.exit_code, res.stdout, res.stderr)
