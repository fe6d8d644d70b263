"""Shared fixtures: the sandbox on loopback, an env file pointing at it, and the real CLI as a subprocess."""

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
        env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SPECS}}
        env.update(extra_env or {})
        proc = subprocess.run([*CLI, *args, "--env-file", str(self.path)], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
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
