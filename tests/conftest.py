"""Shared fixtures: the sandbox on loopback, an env file pointing at it, and the real CLI as a subprocess.

Every test in a module that imports the CLI helpers below (``CLI``, ``Env``, ``make_env``), and every
test that uses the ``env`` fixture, is marked ``cli``: ``pytest -m "not cli"`` is the quick loop of
the tests that start no CLI. A test not so marked that starts the CLI fails (see ``Env.run``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ionqbo.config import SPECS

CLI = [sys.executable, "-m", "ionqbo"]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Env:
    """A sandbox with an env file that points the CLI at it, and a state directory."""

    box: Any
    path: Path
    state_dir: Path
    values: dict[str, str]

    def run(self, *args: str, timeout: float = 120, extra_env: dict[str, str] | None = None) -> Run:
        _starting_cli()
        env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SPECS}}
        env.update(extra_env or {})
        proc = subprocess.run([*CLI, *args, "--env-file", str(self.path)], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        _starting_cli()
        env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SPECS}}
        env.update(extra_env or {})
        return subprocess.Popen([*CLI, *args, "--env-file", str(self.path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

    def set(self, **values: str) -> None:
        self.values.update(values)
        self.write()

    def write(self) -> None:
        self.path.write_text("".join(f"{k}={v}\n" for k, v in self.values.items()))


def make_env(box: Any, tmp_path: Path, **overrides: str) -> Env:
    values = box.env()
    values.update({
        "IONQBO_STATE_DIR": str(tmp_path / "state"),
        "IONQBO_THROTTLE_WAIT": "0.2",
        "IONQBO_HTTP_TIMEOUT": "10",
    })
    values.update(overrides)
    env = Env(box=box, path=tmp_path / "sandbox.env", state_dir=tmp_path / "state", values=values)
    env.write()
    return env


_CLI_HELPERS = ("CLI", "Env", "make_env")
_current: dict[str, bool] = {"cli": True}


def _starting_cli() -> None:
    """The quick loop stays quick: a test that starts the CLI must be marked ``cli``."""
    assert _current["cli"], "this test starts the CLI: mark it @pytest.mark.cli (or import a CLI helper from conftest)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        helpers = any(getattr(module, name, None) is globals()[name] for name in _CLI_HELPERS)
        if helpers or "env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cli)


@pytest.fixture(autouse=True)
def _cli_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    _current["cli"] = request.node.get_closest_marker("cli") is not None
    yield
    _current["cli"] = True


@pytest.fixture
def sandbox() -> Iterator[Any]:
    from ionqbo.sandbox.server import Sandbox

    box = Sandbox(sample=True, multicurrency=True).start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
def env(sandbox: Any, tmp_path: Path) -> Env:
    return make_env(sandbox, tmp_path)
