"""What the CLI tests share: invoking the app on real arguments, and checking a success."""

from __future__ import annotations

from typer.testing import CliRunner

from gpuseg.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result
