"""What the CLI tests share: invoking the app on real arguments, and checking a success."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from gpuseg.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def checkout_env(buffered: bool = False) -> dict[str, str]:
    """The environment for a new interpreter that imports this checkout's gpuseg (not an installed
    copy); ``buffered`` drops PYTHONUNBUFFERED, so that output not flushed on exit is lost."""
    env = {k: v for k, v in os.environ.items() if not (buffered and k == "PYTHONUNBUFFERED")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return env
