"""Shared fixtures: the sandbox on loopback, an env file pointing at it, and the real CLI as a subprocess.

Every test in a module that imports the CLI helpers below (``CLI``, ``Env``, ``make_env``), and every
test that uses the ``env`` fixture, is marked ``cli``: ``pytest -m "not cli"`` is the quick loop of
the tests that start no CLI. A test not so marked that starts the CLI fails (see ``Env.run``).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
class Gate:
    """A tap in front of the sandbox's emulators that holds requests on demand.

    ``close(when)`` holds every later request for which ``when(service, request)`` is true (every
    request without ``when``) until ``open()``. While a request of a sync is held, that sync is
    provably mid-run and holds the lock (the CLI takes it first), so a test can start a second CLI or
    kill the first right there, on any machine load, instead of sleeping and hoping.
    """

    when: Callable[[str, Any], bool] | None = None
    released: threading.Event = field(default_factory=threading.Event)
    holding: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.released.set()

    def close(self, when: Callable[[str, Any], bool] | None = None) -> None:
        with self.lock:
            self.when = when or (lambda _service, _request: True)
            self.holding.clear()
            self.released.clear()

    def open(self) -> None:
        self.released.set()

    def wrap(self, service: str, app: Any) -> Any:
        def handle(request: Any) -> Any:
            if not request.path.startswith("/_admin/"):
                with self.lock:
                    when = None if self.released.is_set() else self.when
                if when is not None and when(service, request):
                    self.holding.set()
                    if not self.released.wait(timeout=120):
                        raise AssertionError("the gate was never opened")
            return app(request)

        return handle

    def wait_holding(self, proc: subprocess.Popen[str], seconds: float = 60) -> None:
        """Wait until a request is held; fail if ``proc`` ended first or ``seconds`` passed."""
        deadline = time.monotonic() + seconds
        while not self.holding.wait(timeout=0.05):
            if proc.poll() is not None:
                raise AssertionError(f"the process ended before the gate held a request: {proc.communicate()}")
            if time.monotonic() > deadline:
                raise AssertionError("no request reached the gate")


def po_batches_after(count: int) -> Callable[[str, Any], bool]:
    """A gate condition: let ``count`` QBO batches of purchase orders through, hold the next ones.

    Other requests pass (a dry run, which writes nothing, is never held).
    """
    passed = [0]

    def when(service: str, request: Any) -> bool:
        if not (service == "qbo" and request.path.endswith("/batch") and b'"PurchaseOrder"' in request.body):
            return False
        if passed[0] >= count:
            return True
        passed[0] += 1
        return False

    return when


@dataclass
class Env:
    """A sandbox with an env file that points the CLI at it, and a state directory.

    ``gate`` holds the sandbox's requests on demand (see :class:`Gate`); a test that closes it sets a
    long ``IONQBO_HTTP_TIMEOUT`` so that a held request is not timed out by the client.
    """

    box: Any
    path: Path
    state_dir: Path
    values: dict[str, str]
    gate: Gate = field(default_factory=Gate)

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


# Time that does not hide bugs: the ION emulator's clock runs this far behind the machine's (every
# record's updatedAt is hours old when ionqbo reads it) and the cursor overlap is 0, so the cursor
# moves right up to the last record read. A cursor that moved past records not yet written would
# lose them, and the suites would see it; with the default 300 s overlap and records stamped "now"
# every run re-reads them and such a bug stays invisible.
ION_LAG = 6 * 3600.0


def make_env(box: Any, tmp_path: Path, *, gate: Gate | None = None, **overrides: str) -> Env:
    values = box.env()
    values.update({
        "IONQBO_CURSOR_OVERLAP_SECONDS": "0",
        "IONQBO_STATE_DIR": str(tmp_path / "state"),
        "IONQBO_THROTTLE_WAIT": "0.2",
        "IONQBO_HTTP_TIMEOUT": "10",
    })
    values.update(overrides)
    env = Env(box=box, path=tmp_path / "sandbox.env", state_dir=tmp_path / "state", values=values,
              gate=gate or Gate())
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


# QBO's duplicate-DocNumber rule, as the emulator plays it: "strict" refuses a second PO with a
# DocNumber in use (6140, the documented behaviour), "lenient" accepts it (the reading the public
# evidence cannot rule out; see ionqbo/sandbox/qbo.py). Against lenient QBO only ionqbo's own
# lookups keep the books free of duplicates. Choose with
# ``@pytest.mark.parametrize("sandbox", QBO_MODES, indirect=True)`` (default strict).
QBO_MODES = ["lenient", "strict"]


def duplicates(box: Any) -> dict[str, dict[str, int]]:
    """What QBO holds more than once, counted from the emulator's contents after the run.

    ``purchase_orders``: DocNumber -> POs holding it (more than one); ``items_by_name``: item name
    (case-folded, as QBO compares) -> items; ``items_by_sku``: SKU -> items, where more items carry it
    than ION has parts with that part number (one item per part; the revisions of one part number
    share a SKU); ``deleted``: entity -> records deleted (ionqbo never deletes: a delete would hide a
    duplicate).
    """
    dump, ion = box.qbo.dump(), box.ion.dump()
    docs = collections.Counter(str(p.get("DocNumber")) for p in dump["PurchaseOrder"])
    names = collections.Counter(str(i.get("Name")).casefold() for i in dump["Item"])
    skus = collections.Counter(str(i["Sku"]) for i in dump["Item"] if i.get("Sku"))
    parts = collections.Counter(str(p.get("partNumber")) for p in ion["parts"])
    return {
        "purchase_orders": {d: n for d, n in docs.items() if n > 1},
        "items_by_name": {n: c for n, c in names.items() if c > 1},
        "items_by_sku": {s: n for s, n in skus.items() if n > max(1, parts[s])},
        "deleted": {e: len(r) for e, r in dump.get("deleted", {}).items() if r},
    }


def duplicates_found(box: Any) -> int:
    """The number of records QBO holds beyond one per ION record (see :func:`duplicates`)."""
    found = duplicates(box)
    parts = collections.Counter(str(p.get("partNumber")) for p in box.ion.dump()["parts"])
    return (sum(n - 1 for n in found["purchase_orders"].values())
            + sum(n - 1 for n in found["items_by_name"].values())
            + sum(n - max(1, parts[s]) for s, n in found["items_by_sku"].items())
            + sum(found["deleted"].values()))


def refusals(box: Any) -> int:
    """Duplicate refusals the QBO emulator sent (6140 and 6240) since its counters were last reset."""
    return int(box.qbo.counters["duplicates_refused"])


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    try:
        yield gate
    finally:
        gate.open()


@pytest.fixture
def sandbox(gate: Gate, request: pytest.FixtureRequest) -> Iterator[Any]:
    from ionqbo.sandbox.server import Sandbox

    mode = getattr(request, "param", "strict")
    assert mode in QBO_MODES, mode
    box = Sandbox(sample=True, multicurrency=True, ion_lag=ION_LAG,
                  allow_duplicate_docnumbers=mode == "lenient").start(tap=gate.wrap)
    try:
        yield box
    finally:
        gate.open()
        box.stop()


@pytest.fixture
def env(sandbox: Any, tmp_path: Path, gate: Gate) -> Env:
    return make_env(sandbox, tmp_path, gate=gate)
