"""The README, .ci/run and --help stay in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ionqbo.cli import cli

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def _quick_start() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_quick_start_has_two_commands() -> None:
    demo, tests = _quick_start()[:2]
    assert demo.endswith("ionqbo demo")
    assert tests.endswith("pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = _quick_start()[1]
    assert f'TEST_COMMAND="{test_command}"' in ci


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_an_example_and_a_readme_row(name: str) -> None:
    command = cli.commands[name]
    assert command.help and "Example:" in command.help, name
    assert f"`ionqbo {name}" in README, name
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert "--env-file" in result.stdout
