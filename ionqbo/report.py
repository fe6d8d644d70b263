"""What a run did, as data (for --json and for the state's last-run record) and as tables."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tabulate import tabulate

from ionqbo.diff import FieldChange
from ionqbo.errors import ExitCode

MAX_CHANGES_KEPT = 40  # field changes kept per updated record in a real run's report
MAX_RECORDS_KEPT = 1000  # records listed in a real run's report; the counts cover them all


@dataclass(slots=True)
class Outcome:
    """What happened to one record in a run."""

    kind: str  # "purchase_order" | "part"
    ion_id: str
    action: str  # created | updated | adopted | unchanged | closed | failed | skipped
    qbo_id: str | None = None
    name: str | None = None  # DocNumber or item name, for people
    changes: list[FieldChange] = field(default_factory=list)


@dataclass
class Failure:
    """A record that could not be synced: queued with its reason and fix."""

    kind: str
    ion_id: str
    code: str
    message: str
    hint: str | None = None
    field: str | None = None
    parked: bool = True
    attempts: int = 1


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    closed: int = 0
    failed: int = 0
    adopted: int = 0  # found in QBO, not written by ionqbo before: linked (and, for a PO, maybe updated)


@dataclass
class SyncReport:
    """The result of one `ionqbo sync` (the JSON report described in the README)."""

    dry_run: bool = False
    exit_code: int = int(ExitCode.OK)
    purchase_orders: Counts = field(default_factory=Counts)
    parts: Counts = field(default_factory=Counts)
    failures: list[Failure] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=lambda: {"ion": 0, "qbo": 0})
    qbo_requests_by_kind: dict[str, int] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    duration_seconds: float = 0.0
    cursors: dict[str, str | None] = field(default_factory=dict)
    error: str | None = None  # a run-level error (exit 4, 5) in one line
    records_omitted: int = 0  # records changed in a real run beyond MAX_RECORDS_KEPT (counted, not listed)
    ion_schema: list[str] = field(default_factory=list)  # what ION's schema does not let this run read, once each

    @property
    def ok(self) -> bool:
        return self.exit_code == ExitCode.OK

    def count(self, outcome: Outcome) -> None:
        """Add one record's outcome to the counts (and keep it for the detail tables)."""
        counts = self.purchase_orders if outcome.kind == "purchase_order" else self.parts
        if outcome.action in ("created", "updated", "unchanged", "closed", "failed", "adopted"):
            setattr(counts, outcome.action, getattr(counts, outcome.action) + 1)
        if not self.dry_run:
            # A real run keeps what a person reads afterwards: what changed, not every value of every
            # new record (a 20,000-PO backfill would hold them all in memory and print them).
            if outcome.action in ("unchanged", "skipped"):
                return
            if len(self.outcomes) >= MAX_RECORDS_KEPT and outcome.action != "failed":
                self.records_omitted += 1
                return
            if outcome.action == "created":
                outcome.changes = []
            elif len(outcome.changes) > MAX_CHANGES_KEPT:
                outcome.changes = outcome.changes[:MAX_CHANGES_KEPT]
        self.outcomes.append(outcome)

    def to_dict(self, *, detail: bool = True) -> dict[str, Any]:
        parts = asdict(self.parts)
        parts.pop("closed")
        data: dict[str, Any] = {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "dry_run": self.dry_run,
            "purchase_orders": asdict(self.purchase_orders),
            "parts": parts,
            "failures": [asdict(f) for f in self.failures],
            "requests": dict(self.requests),
            "qbo_requests_by_kind": dict(self.qbo_requests_by_kind),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_seconds": round(self.duration_seconds, 3),
            "cursors": dict(self.cursors),
            "error": self.error,
            "ion_schema": list(self.ion_schema),
        }
        if detail:
            data["records"] = [
                {"kind": o.kind, "ion_id": o.ion_id, "action": o.action, "qbo_id": o.qbo_id, "name": o.name,
                 "changes": [asdict(c) for c in o.changes]}
                for o in self.outcomes if o.action not in ("unchanged", "skipped") or o.changes
            ]
            data["records_omitted"] = self.records_omitted
        return data


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def _fmt(value: Any, limit: int = 60) -> str:
    if value is None or value == "":
        return "-"
    text = json.dumps(value, default=str, separators=(",", ":")) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_sync(report: SyncReport) -> str:
    """The summary a person reads after `ionqbo sync`: counts, then failures with their fixes."""
    verb = "would " if report.dry_run else ""
    rows = []
    adopted = bool(report.purchase_orders.adopted or report.parts.adopted)
    for label, counts in (("purchase orders", report.purchase_orders), ("parts (QBO items)", report.parts)):
        rows.append([label, counts.created, counts.updated, *([counts.adopted] if adopted else []), counts.unchanged,
                     counts.closed if label.startswith("purchase") else "-", counts.failed])
    headers = [
        "", f"{verb}create" if verb else "created", f"{verb}update" if verb else "updated",
        *([f"{verb}adopt" if verb else "adopted"] if adopted else []), "unchanged",
        f"{verb}close" if verb else "closed", "failed",
    ]
    out = [tabulate(rows, headers=headers, tablefmt="simple")]
    if report.dry_run:
        changed = [o for o in report.outcomes if o.action in ("created", "updated", "closed", "adopted")]
        if changed:
            out.append("")
            out.append("Dry run: nothing was written. What a sync would do:")
            detail = []
            for o in changed:
                action = {"created": "create", "updated": "update", "closed": "close", "adopted": "adopt"}[o.action]
                label = f"{_kind(o.kind)} {o.name or o.ion_id}"
                if not o.changes:
                    detail.append([label, action, "", "", ""])
                for i, c in enumerate(o.changes):
                    detail.append([label if i == 0 else "", action if i == 0 else "", c.path, _fmt(c.old), _fmt(c.new)])
            out.append(tabulate(detail, headers=["record", "action", "field", "QBO now", "from ION"], tablefmt="simple"))
    if report.failures:
        out.append("")
        if report.dry_run:
            out.append(f"{len(report.failures)} record(s) would fail (a real run queues them):")
        else:
            out.append(f"{len(report.failures)} record(s) could not be synced; they stay queued:")
        rows = [[_kind(f.kind), f.ion_id, f.code, f.message, f.hint or ""] for f in report.failures]
        out.append(tabulate(rows, headers=["record", "ION id", "error", "reason", "fix"], tablefmt="simple",
                            maxcolwidths=[None, None, None, 60, 60]))
    if report.ion_schema:
        out.append("")
        out.append("ION's schema (see `ionqbo check-mappings`):")
        out.extend(f"  warning: {note}" for note in report.ion_schema)
    if report.error:
        out.append("")
        out.append(f"error: {report.error}")
    out.append("")
    out.append(
        f"requests: ION {report.requests.get('ion', 0)}, QBO {report.requests.get('qbo', 0)}; "
        f"{report.duration_seconds:.1f}s; exit {report.exit_code}"
    )
    return "\n".join(out)


def _kind(kind: str) -> str:
    return {"purchase_order": "PO", "part": "part"}.get(kind, kind)
