"""Shared machinery for the ionqbo benchmarks: seeded workloads, the sandbox in its own process, measured runs.

Nothing here is imported by ionqbo. The benchmark scripts (``w1_backfill.py``, ``w2_scale.py``,
``w3_steady.py``) use it to:

- generate a workload (ION purchasing and the QBO company it syncs into) from a seed;
- start ``python -m ionqbo sandbox`` in a separate process and load the workload through the
  emulators' ``/_admin/`` interface, so that the process being measured holds ionqbo only;
- run ``python -m ionqbo sync`` (or the per-record baseline, ``baseline.py``) as a child process and
  measure its wall time, CPU time and peak RSS (``os.wait4`` rusage of that one child, plus an RSS
  trace sampled from ``/proc``);
- read the emulators' request counters and print the figures, the floor QBO's limits allow and the
  targets of issue 7.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/x.py` from a clean clone, without an install
    sys.path.insert(0, str(ROOT))

from ionqbo.sandbox import data as sample  # noqa: E402 - after the sys.path fix above

# QBO's published limits per company (docs/reference/qbo.md section 10).
QBO_PER_MINUTE = 500
QBO_PER_SECOND = 10
QBO_BATCH_PER_MINUTE = 40
QBO_BATCH_ITEMS = 30
# Where every workload starts in time (ION createdAt / updatedAt); one record a minute after it.
EPOCH = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
# The ION schema variant whose list queries have no updatedAt filter: ionqbo reads it by _etag scan.
SCAN_SCHEMA = ROOT / "ionqbo" / "sandbox" / "ion-schemas" / "no-updated-filter.graphql"
# read strategy -> the ION schema the sandbox serves for it (None: the reference schema, keyset reads)
STRATEGY_SCHEMAS: dict[str, Path | None] = {"keyset": None, "scan": SCAN_SCHEMA}
# Settings that must not leak from the benchmark's own environment into the measured child.
_ENV_PREFIXES = ("ION_", "QBO_", "IONQBO_")


# ---- workloads -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A seeded, generated workload (issue 7: W1 is the default; W2 is ``scaled(20)``).

    Every PO has ``item_lines`` item lines over distinct parts, ``category_lines`` expense-code lines
    and ``fees`` fees; every part is used by at least one PO when there are enough lines.
    """

    pos: int = 1000
    parts: int = 400
    suppliers: int = 20
    expense_codes: int = 10
    classes: int = 5
    item_lines: int = 4
    category_lines: int = 1
    fees: int = 2
    seed: int = 7

    def scaled(self, factor: float) -> Workload:
        """POs and parts times ``factor``; reference data (suppliers, codes, classes) stays the same."""
        return Workload(pos=max(1, round(self.pos * factor)), parts=max(self.item_lines, round(self.parts * factor)),
                        suppliers=self.suppliers, expense_codes=self.expense_codes, classes=self.classes,
                        item_lines=self.item_lines, category_lines=self.category_lines, fees=self.fees,
                        seed=self.seed)

    @property
    def writes(self) -> int:
        """QBO writes a backfill needs: one item per part, one PO per PO."""
        return self.parts + self.pos

    def describe(self) -> str:
        """One line for the report header."""
        lines = self.item_lines + self.category_lines
        return (f"{self.pos} ordered POs x {lines} lines ({self.item_lines} item, {self.category_lines} category) "
                f"+ {self.fees} fees, {self.parts} parts new to QBO, {self.suppliers} suppliers, "
                f"{self.expense_codes} expense codes, {self.classes} classes, seed {self.seed}")


def _money(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randint(low * 100, high * 100)) / 100


def _num(value: Decimal) -> float | int:
    """A JSON number whose text is the exact decimal (float repr is the shortest round trip)."""
    return int(value) if value == value.to_integral_value() else float(value)


def _stamp(minutes: int) -> str:
    return (EPOCH + timedelta(minutes=minutes)).isoformat(timespec="microseconds")


def supplier_name(i: int) -> str:
    """The name of supplier ``i`` (the QBO vendor has the same DisplayName)."""
    return f"Supplier {i + 1:02d} Precision Works"


def expense_code(i: int) -> str:
    """Expense code ``i`` (the QBO account with this AcctNum)."""
    return str(6100 + 10 * i)


def class_name(i: int) -> str:
    """Accounting class ``i``."""
    return ["Production", "Engineering", "R&D", "Tooling", "Facilities", "Quality", "Test"][i % 7] + (
        f" {i // 7 + 1}" if i >= 7 else "")


SHIP_TO = {"name": "Resonant Machine Works", "street1": "1200 Foundry Way", "street2": "Dock 4",
           "city": "Hawthorne", "state": "CA", "postalCode": "90250", "country": "USA"}
FEE_NAMES = ("Shipping", "Handling", "Expedite", "Hazmat")


def ion_data(w: Workload) -> dict[str, Any]:
    """The ION side of the workload, in the ION emulator's load format."""
    rng = random.Random(w.seed)
    parts = [{"id": p + 1, "partNumber": f"PN-{p + 1:06d}", "revision": "ABC"[p % 3],
              "description": f"Machined component {p + 1}", "trackingType": "LOT",
              "cost": _num(_money(rng, 1, 500)), "unitOfMeasure": "each", "isLatestRevision": True,
              "createdAt": _stamp(p)} for p in range(w.parts)]
    order = list(range(w.parts))
    rng.shuffle(order)
    pos = []
    cursor = 0
    for i in range(w.pos):
        po_id = 100000 + i
        lines: list[dict[str, Any]] = []
        chosen: list[int] = []
        while len(chosen) < min(w.item_lines, w.parts):  # distinct parts; cycling covers them all
            candidate = order[cursor % w.parts]
            cursor += 1
            if candidate not in chosen:
                chosen.append(candidate)
        for k, p in enumerate(chosen):
            qty = rng.randint(1, 40)
            unit = _money(rng, 1, 400)
            lines.append({"id": po_id * 10 + k, "partId": p + 1, "quantity": qty, "unitCost": _num(unit),
                          "totalCost": _num(unit * qty), "description": f"Machined component {p + 1}",
                          "accountingClass": class_name(rng.randrange(w.classes)), "status": "ORDERED"})
        for k in range(w.category_lines):
            value = _money(rng, 20, 2000)
            lines.append({"id": po_id * 10 + len(lines), "partId": None, "quantity": 1, "unitCost": _num(value),
                          "totalCost": _num(value), "description": f"Outside service {k + 1}",
                          "expenseCode": expense_code(rng.randrange(w.expense_codes)),
                          "accountingClass": class_name(rng.randrange(w.classes)), "status": "ORDERED"})
        fees = [{"id": po_id * 10 + k, "name": FEE_NAMES[k % len(FEE_NAMES)], "value": _num(_money(rng, 5, 250))}
                for k in range(w.fees)]
        pos.append({"id": po_id, "status": "ORDERED", "supplierId": rng.randrange(w.suppliers) + 1, "currencyId": 1,
                    "shippingAddress": dict(SHIP_TO), "notes": f"Benchmark PO {i + 1}",
                    "createdAt": _stamp(w.parts + i), "purchaseOrderLines": lines, "fees": fees})
    return {
        "suppliers": [{"id": s + 1, "name": supplier_name(s)} for s in range(w.suppliers)],
        "currencies": [{"id": 1, "code": "USD", "name": "US Dollar"}],
        "users": [{"id": 42, "name": "Ada Lovelace", "email": "ada@example.com"}],
        "parts": parts,
        "purchaseOrders": pos,
    }


def qbo_data(w: Workload) -> dict[str, Any]:
    """The QBO company before a backfill: vendors, accounts and classes only (home currency USD)."""
    core = {sample.AP_ACCOUNT_ID, sample.INVENTORY_ASSET_ACCOUNT_ID, sample.INCOME_ACCOUNT_ID,
            sample.COGS_ACCOUNT_ID, sample.FEE_ACCOUNT_ID}
    accounts = [dict(a) for a in sample.QBO_ACCOUNTS if a["Id"] in core]
    accounts += [{"Id": str(200 + i), "Name": f"Expense {expense_code(i)}", "AcctNum": expense_code(i),
                  "AccountType": "Expense", "AccountSubType": "SuppliesMaterials", "Classification": "Expense",
                  "Active": True} for i in range(w.expense_codes)]
    return {
        "Account": accounts,
        "Vendor": [{"Id": str(300 + s), "DisplayName": supplier_name(s), "CompanyName": supplier_name(s),
                    "Active": True, "CurrencyRef": {"value": "USD"}} for s in range(w.suppliers)],
        "Class": [{"Id": str(5000000000000008000 + c), "Name": class_name(c), "Active": True} for c in range(w.classes)],
        "Preferences": {"CurrencyPrefs": {"MultiCurrencyEnabled": False, "HomeCurrency": {"value": "USD"}}},
        "CompanyInfo": {"CompanyName": "Benchmark Machine Works (sandbox)", "Country": "US"},
    }


def floor_seconds(writes: int, *, reads: int = 0) -> tuple[float, str]:
    """The least time QBO's limits allow for ``writes`` batched writes plus ``reads`` other requests.

    Returns:
        (seconds, which limit binds). The steady-rate floor: ceil(writes / 30) batch requests at 40 a
        minute, every request at 500 a minute and 10 a second (the sliding windows let a first burst
        through, so a run can finish a little under this).
    """
    batches = math.ceil(writes / QBO_BATCH_ITEMS)
    total = batches + reads
    candidates = [
        (batches * 60.0 / QBO_BATCH_PER_MINUTE, f"{batches} batch requests at {QBO_BATCH_PER_MINUTE}/min"),
        (total * 60.0 / QBO_PER_MINUTE, f"{total} requests at {QBO_PER_MINUTE}/min"),
        (total / QBO_PER_SECOND, f"{total} requests at {QBO_PER_SECOND}/s"),
    ]
    return max(candidates)


def burst_floor_seconds(writes: int) -> float:
    """The least time with the sliding windows' first burst: batch 40k+1 cannot start before 60k s."""
    batches = math.ceil(writes / QBO_BATCH_ITEMS)
    return max(60.0 * ((batches - 1) // QBO_BATCH_PER_MINUTE), (batches - 1) / QBO_PER_SECOND)


# ---- the sandbox, in its own process -------------------------------------------------------------


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The benchmark's environment without ION/QBO/ionqbo settings (the env file must be what counts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.update(extra or {})
    return env


class SandboxProcess:
    """``python -m ionqbo sandbox --empty --print-env`` in a child process, driven through ``/_admin/``."""

    def __init__(self, workdir: Path, ion_schema: Path | None = None) -> None:
        self.workdir = workdir
        self.ion_schema = ion_schema
        self.env: dict[str, str] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._http = requests.Session()

    def start(self, timeout: float = 30.0) -> SandboxProcess:
        """Start the emulators and read the settings they print."""
        log = (self.workdir / "sandbox.log").open("w")
        schema = ["--ion-schema", str(self.ion_schema)] if self.ion_schema is not None else []
        self._proc = subprocess.Popen([sys.executable, "-m", "ionqbo", "sandbox", "--empty", "--no-multicurrency",
                                       "--print-env", *schema], stdout=subprocess.PIPE, stderr=log, text=True,
                                      cwd=self.workdir, env=child_env())
        assert self._proc.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(self._read_env()), daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive() or not lines:
            self.stop()
            raise RuntimeError(f"the sandbox did not start; see {self.workdir / 'sandbox.log'}")
        self.env = dict(line.split("=", 1) for line in lines)
        return self

    def _read_env(self) -> Iterator[str]:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.strip()
            if "=" in line:
                yield line
            if line.startswith("QBO_FEE_ACCOUNT_ID="):  # the last setting `--print-env` writes
                return

    def stop(self) -> None:
        """Stop the emulators (SIGTERM, which `ionqbo sandbox` handles)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    @property
    def ion_url(self) -> str:
        """The ION emulator's base URL."""
        return self.env["ION_API_URL"].removesuffix("/graphql")

    @property
    def qbo_url(self) -> str:
        """The QBO emulator's base URL."""
        return self.env["QBO_BASE_URL"]

    def admin(self, side: str, route: str, body: Any = None, *, method: str = "POST") -> Any:
        """Call ``/_admin/{route}`` on the ION or QBO emulator (never counted, never throttled)."""
        base = self.ion_url if side == "ion" else self.qbo_url
        url = f"{base}/_admin/{route}"
        payload = None if body is None else json.dumps(body).encode()
        resp = self._http.request(method, url, data=payload, timeout=600)
        if resp.status_code >= 300:
            raise RuntimeError(f"{side} admin {route}: HTTP {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None

    def load(self, ion: Mapping[str, Any] | None, qbo: Mapping[str, Any]) -> None:
        """Replace both stores (the QBO company is reset first) and zero the counters."""
        if ion is not None:
            self.admin("ion", "load", ion)
        self.admin("qbo", "reset")
        self.admin("qbo", "load", qbo)
        self.reset_counters()

    def restore_qbo(self, dump: Mapping[str, Any]) -> None:
        """Put the QBO company back to a ``dump`` (same Ids and SyncTokens)."""
        keep = {k: v for k, v in dump.items() if k not in ("realmId", "deleted") and v}
        self.admin("qbo", "reset")
        self.admin("qbo", "load", keep)
        self.reset_counters()

    def reset_counters(self) -> None:
        """Zero the request counters of both emulators."""
        self.admin("ion", "counters/reset")
        self.admin("qbo", "counters/reset")

    def counters(self) -> dict[str, dict[str, Any]]:
        """``{"ion": {...}, "qbo": {...}}`` from ``/_admin/counters``."""
        return {"ion": self.admin("ion", "counters", method="GET"), "qbo": self.admin("qbo", "counters", method="GET")}

    def limits(self, *, rate_limits: bool, latency: float) -> None:
        """Turn QBO's published limits on or off and set the per-request latency of the QBO emulator."""
        self.admin("qbo", "settings", {"rate_limits": rate_limits, "latency": latency})

    def env_file(self, path: Path, state_dir: Path, extra: Mapping[str, str] | None = None) -> Path:
        """Write settings for one ionqbo state directory, with a fresh QBO refresh token of its own."""
        token = self.admin("qbo", "refresh-token")["refresh_token"]
        values = {**self.env, "QBO_REFRESH_TOKEN": token, "IONQBO_STATE_DIR": str(state_dir), **(extra or {})}
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        return path

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- measured child processes --------------------------------------------------------------------


@dataclass
class Measured:
    """One measured child process: its exit, time, CPU, memory and JSON output."""

    label: str
    exit_code: int
    wall: float
    user: float
    system: float
    max_rss_mb: float
    rss_trace_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB)
    report: dict[str, Any] = field(default_factory=dict)
    stderr_tail: str = ""
    counters: dict[str, dict[str, Any]] = field(default_factory=dict)
    sampled_hwm_mb: float = 0.0  # the largest VmHWM seen by the sampler (a cross-check of max_rss_mb)

    @property
    def cpu(self) -> float:
        """User plus system CPU seconds."""
        return self.user + self.system

    @property
    def qbo_requests(self) -> int:
        """QBO API requests the emulator saw (token requests excluded; they go to the OAuth host)."""
        q = self.counters.get("qbo", {})
        return int(q.get("total", 0)) - int(q.get("token", 0))

    @property
    def ion_requests(self) -> int:
        """Requests the ION emulator saw (token and GraphQL)."""
        return int(self.counters.get("ion", {}).get("total", 0))


def _proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MB (empty when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) / 1024
    return out


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run_measured(label: str, argv: Sequence[str], *, workdir: Path, box: SandboxProcess,
                 sample_every: float = 0.2) -> Measured:
    """Run one command to its end through ``measure.py``; collect its rusage and an RSS trace.

    Wall time, CPU time and peak RSS (``ru_maxrss``) are the command's own (see ``measure.py`` for
    why it does not start from this process). The RSS trace samples ``/proc/<pid>/status`` of the
    command every ``sample_every`` seconds. The emulator counters are zeroed before and read after,
    so they hold this run's requests only.
    """
    box.reset_counters()
    out_path, err_path = workdir / f"{label}.out.json", workdir / f"{label}.err.log"
    usage_path = workdir / f"{label}.usage.json"
    trace: list[tuple[float, float]] = []
    hwm = [0.0]
    wrapper = [sys.executable, str(Path(__file__).with_name("measure.py")), str(usage_path), "--", *argv]
    with out_path.open("w") as out, err_path.open("w") as err:
        start = time.monotonic()
        proc = subprocess.Popen(wrapper, stdout=out, stderr=err, cwd=workdir, env=child_env())
        done = threading.Event()

        def sample() -> None:
            while not done.wait(sample_every):
                for pid in _children(proc.pid):
                    status = _proc_status(pid)
                    if "VmRSS" in status:
                        trace.append((time.monotonic() - start, status["VmRSS"]))
                        hwm[0] = max(hwm[0], status.get("VmHWM", 0.0))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
        done.set()
        sampler.join()
    usage: dict[str, Any] = json.loads(usage_path.read_text()) if usage_path.exists() else {}
    text = out_path.read_text()
    try:
        report = json.loads(text) if text.strip() else {}
    except ValueError:
        report = {"unparsed_stdout": text[:500]}
    stderr = err_path.read_text()
    exit_code: int | None = usage.get("exit_code", proc.returncode)
    return Measured(label=label, exit_code=int(exit_code or 0),
                    wall=float(usage.get("wall", time.monotonic() - start)), user=float(usage.get("user", 0.0)),
                    system=float(usage.get("system", 0.0)), max_rss_mb=float(usage.get("max_rss_kb", 0)) / 1024,
                    rss_trace_mb=trace, report=report, stderr_tail="\n".join(stderr.strip().splitlines()[-5:]),
                    counters=box.counters(), sampled_hwm_mb=hwm[0])


def _python(paced: bool) -> list[str]:
    """How to start ionqbo: ``python -m ionqbo``, or through ``unpaced.py`` with its QBO pacing lifted."""
    return [sys.executable, "-m", "ionqbo"] if paced else [sys.executable, str(Path(__file__).with_name("unpaced.py"))]


def sync_argv(env_file: Path, *, since: str | None = "2000-01-01", extra: Sequence[str] = (),
              paced: bool = True) -> list[str]:
    """``python -m ionqbo sync --json --env-file ...`` (with ``--since`` unless None)."""
    argv = [*_python(paced), "sync", "--json", "--env-file", str(env_file)]
    if since is not None:
        argv += ["--since", since]
    return argv + list(extra)


def baseline_argv(env_file: Path, *, since: str = "2000-01-01", paced: bool = True,
                  max_records: int | None = None) -> list[str]:
    """The per-record baseline (``benchmarks/baseline.py``) with the same settings."""
    head = [sys.executable, str(Path(__file__).with_name("baseline.py"))] if paced else [*_python(False), "--baseline"]
    argv = [*head, "--env-file", str(env_file), "--since", since]
    return argv + (["--max-records", str(max_records)] if max_records else [])


# ---- printing ------------------------------------------------------------------------------------


def _kinds(counts: Mapping[str, Any], skip: Sequence[str] = ()) -> str:
    items = [(k, v) for k, v in counts.items() if v and k not in skip]
    return ", ".join(f"{k} {v}" for k, v in sorted(items, key=lambda kv: (-int(kv[1]), kv[0]))) or "none"


def rss_profile(m: Measured, points: int = 5) -> str:
    """The RSS trace at ``points`` evenly spaced moments of the run, in MB."""
    if not m.rss_trace_mb:
        return "(no samples)"
    picks = [m.rss_trace_mb[min(len(m.rss_trace_mb) - 1, round(i * (len(m.rss_trace_mb) - 1) / (points - 1)))]
             for i in range(points)]
    return ", ".join(f"{t:.0f}s {mb:.0f}" for t, mb in picks)


def print_run(m: Measured, *, pos: int, floor: tuple[float, str] | None = None, burst: float | None = None) -> None:
    """Print one run's figures."""
    rep = m.report
    print(f"-- {m.label}: exit {m.exit_code}, wall {m.wall:.1f} s (in-process {rep.get('duration_seconds', '?')} s)")
    if rep.get("purchase_orders") is not None:
        print(f"   outcome: POs {_kinds(rep.get('purchase_orders') or {})}; parts {_kinds(rep.get('parts') or {})}; "
              f"failures {len(rep.get('failures') or [])}")
    requests_ = rep.get("requests") or {}
    print(f"   client report: QBO {requests_.get('qbo', '?')} ({_kinds(rep.get('qbo_requests_by_kind') or {})}), "
          f"ION {requests_.get('ion', '?')}")
    qbo, ion = m.counters.get("qbo", {}), m.counters.get("ion", {})
    print(f"   QBO emulator: {m.qbo_requests} API requests ({_kinds(qbo, skip=('total', 'token', 'writes', 'batch_items', 'throttled'))})"
          f" + {qbo.get('token', 0)} token; batch items {qbo.get('batch_items', 0)}, writes {qbo.get('writes', 0)}, "
          f"throttled (429 sent) {qbo.get('throttled', 0)}")
    ops = ion.get("by_operation") or {}
    print(f"   ION emulator: {m.ion_requests} requests (token {ion.get('token', 0)}, graphql {ion.get('graphql', 0)}: "
          f"{_kinds(ops)})")
    if floor is not None:
        extra = f"; burst-aware floor {burst:.1f} s, wall / that = {m.wall / burst:.2f}" if burst else ""
        print(f"   floor {floor[0]:.1f} s ({floor[1]}); wall / floor = {m.wall / floor[0]:.2f}{extra}")
    handled = sum(int(v) for v in (rep.get("purchase_orders") or {}).values()) or pos
    per_po = m.cpu / handled * 1000 if handled else 0.0
    print(f"   CPU {m.cpu:.2f} s (user {m.user:.2f}, sys {m.system:.2f}) = {per_po:.2f} ms per PO handled ({handled}); "
          f"peak RSS {m.max_rss_mb:.1f} MB (sampled VmHWM {m.sampled_hwm_mb:.1f}); RSS trace (s MB): {rss_profile(m)}")
    if m.exit_code not in (0,) and m.stderr_tail:
        print("   stderr tail:\n      " + m.stderr_tail.replace("\n", "\n      "))


def print_comparison(ours: Measured, base: Measured) -> None:
    """Print the ratio between the per-record baseline and ionqbo."""
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b else "n/a"

    print(f"-- baseline / ionqbo: QBO requests {base.qbo_requests} / {ours.qbo_requests} = "
          f"{ratio(base.qbo_requests, ours.qbo_requests)}; ION requests {base.ion_requests} / {ours.ion_requests} = "
          f"{ratio(base.ion_requests, ours.ion_requests)}; wall {base.wall:.1f} / {ours.wall:.1f} s = "
          f"{ratio(base.wall, ours.wall)}; CPU {base.cpu:.1f} / {ours.cpu:.1f} s = {ratio(base.cpu, ours.cpu)}")


def print_extrapolated(ours: Measured, base: Measured, *, records: int, total: int) -> None:
    """The baseline ran on the first ``records`` of ``total`` records: scale its cost to all of them.

    Its QBO requests are 2 per record plus the reference reads, and its time is paced per request,
    so both scale linearly with the records.
    """
    done = (base.report.get("requests") or {}).get("qbo", base.qbo_requests)
    per = done / records
    est_requests = round(per * total)
    est_wall = base.wall / records * total
    print(f"-- baseline measured on {records} of {total} records, extrapolated to all: ~{est_requests} QBO requests "
          f"({per:.2f} per record), ~{est_wall:.0f} s; baseline / ionqbo: QBO requests ~{est_requests / max(1, ours.qbo_requests):.0f}x, "
          f"wall ~{est_wall / max(ours.wall, 1e-9):.1f}x")


@dataclass
class Targets:
    """Issue 7's targets, checked and printed at the end of a script."""

    rows: list[tuple[str, bool | None, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool | None, detail: str) -> None:
        """Record one target (None: not measured in this mode)."""
        self.rows.append((name, ok, detail))

    def print(self) -> None:
        """Print every target with MET / MISSED / n/a."""
        print("-- targets")
        for name, ok, detail in self.rows:
            mark = "n/a   " if ok is None else ("MET   " if ok else "MISSED")
            print(f"   [{mark}] {name}: {detail}")


# ---- command line --------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    """Options every benchmark script accepts."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smaller workload (a tenth) for a fast look")
    p.add_argument("--scale", type=float, default=None, help="workload size relative to W1 (overrides --quick)")
    p.add_argument("--no-limits", action="store_true",
                   help="QBO emulator without rate limits and latency, and ionqbo's own pacing lifted (unpaced.py)")
    p.add_argument("--latency", type=float, default=0.1, help="seconds added to every QBO answer (with limits)")
    p.add_argument("--no-baseline", action="store_true", help="skip the per-record baseline")
    p.add_argument("--seed", type=int, default=7, help="workload seed")
    p.add_argument("--keep", action="store_true", help="keep the work directory (env files, outputs, logs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra ionqbo setting")
    p.add_argument("--strategy", choices=("both", *STRATEGY_SCHEMAS), default="both",
                   help="ION read strategy: keyset (reference schema) and/or scan (a schema without an updatedAt "
                        f"filter: {SCAN_SCHEMA.name}); both by default, one after the other")
    return p


def strategies(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """The (strategy, ION schema) pairs ``--strategy`` asks for."""
    return [(name, schema) for name, schema in STRATEGY_SCHEMAS.items() if args.strategy in ("both", name)]


def print_strategies(rows: Sequence[tuple[str, str, Measured]]) -> None:
    """One table: request counts per read strategy and run."""
    print("-- request counts by ION read strategy")
    print(f"   {'strategy':<8}  {'run':<32}  {'ION':>5}  {'QBO':>5}  ION operations")
    for strategy, label, m in rows:
        ops = (m.counters.get("ion", {}).get("by_operation") or {})
        qbo = int(m.counters.get("qbo", {}).get("total", 0))
        print(f"   {strategy:<8}  {label:<32}  {m.ion_requests:>5}  {qbo:>5}  {_kinds(ops)}")


def extra_settings(args: argparse.Namespace) -> dict[str, str]:
    """``--set KEY=VALUE`` options as a dict."""
    return dict(item.split("=", 1) for item in args.set)


@contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    """A temporary work directory (kept with ``--keep``)."""
    path = Path(tempfile.mkdtemp(prefix="ionqbo-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"(work directory kept: {path})")
        else:
            import shutil

            shutil.rmtree(path, ignore_errors=True)


def timed(what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` and print how long it took (for set-up steps)."""
    start = time.monotonic()
    result = fn()
    print(f"   ({what}: {time.monotonic() - start:.1f} s)")
    return result


# ---- mapping and diffing CPU, measured apart from I/O ----------------------------------------------


def map_diff_cpu(box: SandboxProcess, env_file: Path) -> dict[str, Any]:
    """CPU per PO of ionqbo's pure steps on this workload, measured in this process without I/O.

    Reads every PO from the ION emulator and the company from the QBO emulator's dump (not timed),
    then times ``mapping.po_to_payload`` and ``diff`` against the PO QBO now holds. After a complete
    sync every diff should be "unchanged": the count of others is a correctness check.
    """
    from ionqbo import mapping
    from ionqbo.config import Settings
    from ionqbo.diff import diff
    from ionqbo.ion.client import IonClient
    from ionqbo.ion.models import PurchaseOrder

    settings = Settings.load(str(env_file))
    pos = [po for po in IonClient(settings).changed_purchase_orders(None, list(settings.po_statuses))
           if isinstance(po, PurchaseOrder)]
    dump = box.admin("qbo", "dump", method="GET")
    refs = mapping.References.build(vendors=dump["Vendor"], accounts=dump["Account"], classes=dump["Class"],
                                    preferences=dump["Preferences"], settings=settings)
    items = {str(i["Name"]).lower(): str(i["Id"]) for i in dump["Item"]}
    item_ids = {line.part.id: items.get(mapping.item_name(line.part, settings.item_name_template).lower(), "")
                for po in pos for line in po.lines if line.part is not None}
    existing = {str(p.get("DocNumber")): p for p in dump["PurchaseOrder"]}
    start = time.process_time()
    payloads = [mapping.po_to_payload(po, refs, item_ids) for po in pos]
    mapped = time.process_time()
    actions: dict[str, int] = {}
    for po, body in zip(pos, payloads, strict=True):
        action = diff(body, existing.get(po.id), mapping.PO_OWNED_FIELDS).action
        actions[action] = actions.get(action, 0) + 1
    diffed = time.process_time()
    n = max(1, len(pos))
    return {"pos": len(pos), "map_ms_per_po": (mapped - start) * 1000 / n, "diff_ms_per_po": (diffed - mapped) * 1000 / n,
            "diff_actions": actions}


def print_map_diff(figures: Mapping[str, Any]) -> None:
    """Print :func:`map_diff_cpu`'s figures."""
    total = figures["map_ms_per_po"] + figures["diff_ms_per_po"]
    print(f"-- mapping + diff CPU (in-process, no I/O, {figures['pos']} POs): map {figures['map_ms_per_po']:.3f} ms/PO, "
          f"diff vs QBO's copy {figures['diff_ms_per_po']:.3f} ms/PO, total {total:.3f} ms/PO; "
          f"diff results {_kinds(figures['diff_actions'])}")


# ---- the backfill workloads (W1, W2) --------------------------------------------------------------------


@dataclass
class BackfillResult:
    """What :func:`backfill` measured."""

    workload: Workload
    limits: bool
    ours: Measured
    floor: tuple[float, str] | None
    map_diff: dict[str, Any] | None = None
    base: Measured | None = None


def backfill(box: SandboxProcess, work: Path, w: Workload, *, limits: bool, latency: float, baseline: bool,
             extra: Mapping[str, str], label: str = "ionqbo", map_diff: bool = True,
             baseline_records: int | None = None) -> BackfillResult:
    """Load ``w``, run ``ionqbo sync --since 2000-01-01`` and (optionally) the baseline on the same data."""
    ion, qbo = ion_data(w), qbo_data(w)
    timed("loading the workload into the emulators", lambda: box.load(ion, qbo))
    box.limits(rate_limits=limits, latency=latency if limits else 0.0)
    floor = floor_seconds(w.writes) if limits else None
    burst = burst_floor_seconds(w.writes) if limits else None
    env = box.env_file(work / f"{label}.env", work / f"{label}-state", extra)
    ours = run_measured(label, sync_argv(env, paced=limits), workdir=work, box=box)
    print_run(ours, pos=w.pos, floor=floor, burst=burst)
    result = BackfillResult(w, limits, ours, floor)
    if map_diff:
        result.map_diff = map_diff_cpu(box, env)
        print_map_diff(result.map_diff)
    if baseline:
        box.load(None, qbo)  # the same company as before ionqbo's run; ION is unchanged by reads
        box.limits(rate_limits=limits, latency=latency if limits else 0.0)
        env = box.env_file(work / f"{label}-baseline.env", work / f"{label}-baseline-state", extra)
        result.base = run_measured(f"{label}-baseline", baseline_argv(env, paced=limits, max_records=baseline_records),
                                   workdir=work, box=box)
        print_run(result.base, pos=w.pos, floor=floor, burst=burst)
        if baseline_records and baseline_records < w.writes:
            print_extrapolated(ours, result.base, records=baseline_records, total=w.writes)
        else:
            print_comparison(ours, result.base)
    return result


def backfill_targets(r: BackfillResult, targets: Targets, *, max_qbo: int | None, max_ion: int | None,
                     max_ratio: float | None) -> None:
    """The targets every backfill shares: complete, no 429 at the client, and the given budgets."""
    m, w = r.ours, r.workload
    pos = (m.report.get("purchase_orders") or {})
    parts = (m.report.get("parts") or {})
    complete = m.exit_code == 0 and pos.get("created") == w.pos and parts.get("created") == w.parts
    targets.check("backfill complete", complete, f"exit {m.exit_code}, POs created {pos.get('created')}/{w.pos}, "
                  f"items created {parts.get('created')}/{w.parts}")
    throttled = int(m.counters.get("qbo", {}).get("throttled", 0))
    targets.check("no 429 reaches the client", throttled == 0, f"{throttled} sent by the emulator")
    total = int(m.counters.get("qbo", {}).get("total", 0))
    if max_qbo is not None:
        targets.check(f"QBO requests <= {max_qbo}", total <= max_qbo,
                      f"{total} in all ({m.qbo_requests} API + {total - m.qbo_requests} token)")
    if max_ion is not None:
        targets.check(f"ION requests <= {max_ion}", m.ion_requests <= max_ion, f"{m.ion_requests}")
    if max_ratio is not None:
        if r.floor is None:
            targets.check(f"wall <= {max_ratio} x floor", None, "no limits in this run")
        else:
            ratio = m.wall / r.floor[0]
            targets.check(f"wall <= {max_ratio} x floor", ratio <= max_ratio,
                          f"{m.wall:.1f} s / {r.floor[0]:.1f} s = {ratio:.2f}")
    if r.base is not None:
        throttled = int(r.base.counters.get("qbo", {}).get("throttled", 0))
        targets.check("baseline: no 429 reaches the client", throttled == 0, f"{throttled} sent by the emulator")
