"""The per-record baseline: how a typical integration syncs, for comparison with ``ionqbo sync``.

One lookup and one write per record: for every part an ``Item`` query by name, then a create (or a
full update when it differs); for every purchase order a ``PurchaseOrder`` query by DocNumber, then
a create (or an update). Items a PO needs that the parts stream did not bring are looked up and
created the same way. It uses ionqbo's own pieces, so the comparison isolates the strategy: the
same IonClient (same ION paging), QboClient (same retries, same RateLimiter pacing), mapping and diff.
Reference data (vendors, accounts, classes, preferences) is read once per run, when there is work.

Run by the benchmark scripts as a child process (so its time and memory are measured the same way)::

    python benchmarks/baseline.py --env-file ENV --since 2000-01-01

Prints one JSON object shaped like the ``requests`` part of ``ionqbo sync --json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ionqbo import mapping  # noqa: E402 - after the sys.path fix above
from ionqbo.config import Settings  # noqa: E402
from ionqbo.diff import diff  # noqa: E402
from ionqbo.errors import IonqboError, RecordError  # noqa: E402
from ionqbo.http import redact  # noqa: E402
from ionqbo.ion.client import IonClient  # noqa: E402
from ionqbo.ion.models import InvalidRecord, Part, PurchaseOrder  # noqa: E402
from ionqbo.qbo.auth import QboAuth, TokenStore  # noqa: E402
from ionqbo.qbo.client import QboClient, quote  # noqa: E402


class PerRecordSync:
    """Lookup-then-write, one record at a time."""

    def __init__(self, settings: Settings, *, max_records: int | None = None) -> None:
        self.settings = settings
        self.max_records = max_records  # stop after this many parts + POs (a sample of a large workload)
        self.records = 0
        self.ion = IonClient(settings)
        self.qbo = QboClient(settings, QboAuth(settings, TokenStore(settings.token_store_path)))
        self.refs: mapping.References | None = None
        self.item_ids: dict[str, str] = {}  # ION part id -> QBO item id (this run)
        self.outcomes: dict[str, dict[str, int]] = {"parts": {}, "purchase_orders": {}}
        self.failures: list[dict[str, str]] = []
        self.run_id = hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:8]

    def references(self) -> mapping.References:
        """Vendors, accounts, classes and preferences, read on first use."""
        if self.refs is None:
            self.refs = mapping.References.build(
                vendors=self.qbo.query_all("Vendor"), accounts=self.qbo.query_all("Account"),
                classes=self.qbo.query_all("Class"), preferences=self.qbo.preferences(), settings=self.settings)
        return self.refs

    def _count(self, stream: str, action: str) -> None:
        name = {"create": "created", "update": "updated"}.get(action, action)
        self.outcomes[stream][name] = self.outcomes[stream].get(name, 0) + 1

    def _request_id(self, kind: str, ion_id: str) -> str:
        return f"bl-{self.run_id}-{kind}-{ion_id}"[:50]

    def upsert_item(self, part: Part, *, update: bool) -> None:
        """One Item query by name, then a create, or an update when it differs."""
        refs = self.references()
        start = (part.created_at or datetime.now(UTC)).astimezone(UTC).date()
        body = mapping.part_to_item(part, refs, start_date=start)
        rows = self.qbo.query(f"select * from Item where Name = {quote(body['Name'])}")
        existing = rows[0] if rows else None
        if existing is not None and not update:
            self.item_ids[part.id] = str(existing["Id"])
            return
        change = diff(body, existing, mapping.ITEM_OWNED_FIELDS if existing else tuple(body))
        if change.action == "create":
            saved = self.qbo.create("Item", change.body, request_id=self._request_id("i", part.id))
        elif change.action == "update":
            saved = self.qbo.update("Item", change.body, request_id=self._request_id("iu", part.id))
        else:
            saved = existing or {}
        self.item_ids[part.id] = str(saved.get("Id"))
        self._count("parts", change.action)

    def upsert_po(self, po: PurchaseOrder) -> None:
        """Items the PO needs, then one PurchaseOrder query by DocNumber and a create or an update."""
        for line in po.lines:
            if line.part is not None and not line.expense_code and line.part.id not in self.item_ids:
                self.upsert_item(line.part, update=False)
        body = mapping.po_to_payload(po, self.references(), self.item_ids)
        rows = self.qbo.query(f"select * from PurchaseOrder where DocNumber = {quote(po.id)}")
        change = diff(body, rows[0] if rows else None, mapping.PO_OWNED_FIELDS)
        if change.action == "create":
            self.qbo.create("PurchaseOrder", change.body, request_id=self._request_id("p", po.id))
        elif change.action == "update":
            self.qbo.update("PurchaseOrder", change.body, request_id=self._request_id("pu", po.id))
        self._count("purchase_orders", change.action)

    def run(self, since: datetime | None) -> dict[str, Any]:
        """Parts first, then purchase orders; every record on its own."""
        started = time.monotonic()
        for part in self.ion.changed_parts(since):
            if not self._one("part", part, lambda p: self.upsert_item(p, update=True)):
                break
        for po in self.ion.changed_purchase_orders(since, list(self.settings.po_statuses)):
            if not self._one("purchase_order", po, self.upsert_po):
                break
        return {
            "ok": not self.failures,
            "purchase_orders": self.outcomes["purchase_orders"],
            "parts": self.outcomes["parts"],
            "failures": self.failures[:20],
            "failed": len(self.failures),
            "records": self.records,
            "requests": {"ion": self.ion.request_count, "qbo": self.qbo.request_count},
            "qbo_requests_by_kind": dict(self.qbo.counts),
            "limiter_waited_seconds": round(self.qbo.limiter.waited, 3),
            "duration_seconds": round(time.monotonic() - started, 3),
        }

    def _one(self, kind: str, record: Any, handle: Any) -> bool:
        """Handle one record; False once ``max_records`` have been handled."""
        if self.max_records is not None and self.records >= self.max_records:
            return False
        self.records += 1
        if isinstance(record, InvalidRecord):
            self.failures.append({"kind": kind, "ion_id": record.ion_id, "message": str(record.error)})
            return True
        try:
            handle(record)
        except RecordError as exc:
            self.failures.append({"kind": kind, "ion_id": record.id, "message": redact(str(exc))[:300]})
        return True


def _since(text: str) -> datetime:
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    """Run the baseline once and print its JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--env-file", required=True)
    p.add_argument("--since", default="2000-01-01")
    p.add_argument("--max-records", type=int, default=None, help="stop after this many parts + POs")
    args = p.parse_args(argv)
    settings = Settings.load(args.env_file)
    redact.add(*settings.secrets())
    try:
        summary = PerRecordSync(settings, max_records=args.max_records).run(_since(args.since))
    except IonqboError as exc:
        print(json.dumps({"ok": False, "error": redact(str(exc))}))
        return int(exc.exit_code)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
