"""One sync run: read ION, map, diff against QBO, write in batches, record outcomes (design.md 5).

No click and no printing here: the CLI renders the :class:`~ionqbo.report.SyncReport` this returns.

How a run flows::

    lock -> load state -> ION: changed parts, then changed POs (pages, in chunks) -> for each chunk:
    resolve references (read once per run, only when there is work) -> map (pure) -> look up the QBO
    items / POs by name / DocNumber in bulk -> diff (pure) -> write items, then POs (batches of 30,
    each with a requestid) -> record outcomes, save state (cursor moves per chunk) -> report
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from ionqbo import clock, mapping, shutdown
from ionqbo.config import Settings
from ionqbo.diff import FieldChange, diff
from ionqbo.errors import (
    ApiError,
    AuthError,
    DeadlineReachedError,
    ExitCode,
    MappingError,
    QboRejectedError,
    RecordError,
    RetriableApiError,
    TransientRecordError,
    UnavailableError,
)
from ionqbo.http import run_deadline
from ionqbo.ion.models import InvalidRecord, Part, PurchaseOrder
from ionqbo.qbo.client import quote
from ionqbo.qbo.models import BatchItem, BatchResult, QboFault
from ionqbo.report import Failure, Outcome, SyncReport
from ionqbo.shutdown import Terminated
from ionqbo.state import LedgerEntry, State, StateStore, SyncLock

log = logging.getLogger("ionqbo.sync")

PO_KIND = "purchase_order"
PART_KIND = "part"
STREAMS = {PO_KIND: "purchase_orders", PART_KIND: "parts"}

# How many ION records are mapped, looked up and written together. Big enough that bulk lookups and
# batches of 30 are full; small enough that memory stays flat and progress is saved often.
CHUNK = 300
# QBO: "maximum number of payloads in a single BatchItemRequest is 30" (qbo-api.md section 7).
BATCH_SIZE = 30
# Names / DocNumbers per `IN (...)` lookup; MAXRESULTS is at most 1000 (qbo-api.md section 6).
LOOKUP_SIZE = 300
# How often a write that met a stale SyncToken (5010) or a duplicate is re-read and re-tried in a run.
WRITE_ROUNDS = 3
CANCELED = "CANCELED"
# Reference data cached in the state between runs (qbo-api.md section 8: CDC looks back at most 30
# days and returns at most 1000 objects).
REFS_CACHE_KEY = "qbo_refs"
CDC_MAX_AGE = timedelta(days=29)
CDC_SKEW = timedelta(minutes=5)  # clock skew between this machine and QBO
CDC_MAX_OBJECTS = 1000
# Preferences (multicurrency, class tracking, ...) change rarely; CDC is not documented to carry them.
PREFERENCES_TTL = timedelta(hours=1)


class IonSource(Protocol):
    request_count: int

    def changed_purchase_orders(
        self, since: datetime | None, statuses: Sequence[str]
    ) -> Iterator[PurchaseOrder | InvalidRecord]: ...

    def purchase_orders_by_id(self, ids: Sequence[str]) -> Iterator[PurchaseOrder | InvalidRecord]: ...

    def changed_parts(self, since: datetime | None) -> Iterator[Part | InvalidRecord]: ...

    def parts_by_id(self, ids: Sequence[str]) -> Iterator[Part | InvalidRecord]: ...


class QboSink(Protocol):
    request_count: int
    counts: dict[str, int]

    def query_all(self, entity: str, where: str = "", order_by: str = "") -> Iterator[dict[str, Any]]: ...

    def read(self, entity: str, entity_id: str) -> dict[str, Any]: ...

    def batch(self, items: list[BatchItem], *, request_id: str | None = None) -> list[BatchResult]: ...

    def preferences(self) -> dict[str, Any]: ...

    def cdc(self, entities: Sequence[str], changed_since: datetime) -> dict[str, list[dict[str, Any]]]: ...


@dataclass(frozen=True)
class SyncOptions:
    """What one run should do (the `ionqbo sync` options)."""

    since: datetime | None = None
    dry_run: bool = False
    po_ids: tuple[str, ...] = ()
    parts: bool = True


Progress = Callable[[str, int], None]  # (stream, records done so far)


def utcnow() -> datetime:
    return clock.utcnow()


@dataclass
class _Write:
    """One pending QBO write for one ION record."""

    kind: str
    ion_id: str
    entity: str  # "Item" | "PurchaseOrder"
    operation: str  # "create" | "update"
    body: dict[str, Any]
    desired: dict[str, Any]
    owned: tuple[str, ...]
    name: str  # DocNumber or item Name: the lookup key
    action: str  # what the outcome is called: created / updated / closed
    changes: list[FieldChange] = field(default_factory=list)
    ion_updated_at: datetime | None = None
    ion_etag: str = ""
    payload_hash: str = ""
    part_ids: tuple[str, ...] = ()  # the parts whose items a PO's lines use


class Syncer:
    """Runs one sync. Collaborators are passed in (R11) so tests can use the emulators or fakes."""

    def __init__(
        self,
        settings: Settings,
        *,
        ion: IonSource,
        qbo: QboSink,
        store: StateStore,
        realm_id: str = "",
        now: Callable[[], datetime] = utcnow,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.ion = ion
        self.qbo = qbo
        self.store = store
        self.realm_id = realm_id
        self.now = now
        self.progress = progress
        self._refs: mapping.References | None = None
        self._items: dict[str, dict[str, Any]] = {}  # lower(item name) -> QBO item
        self._item_owner: dict[str, str] = {}  # lower(item name) -> ION part id (this run)
        self._mappings = _load_mappings(settings)
        self._handled: dict[str, str] = {}  # "kind:id" -> the ION _etag handled in this run
        self._stale_items: set[str] = set()  # QBO item ids that changed in QBO since the last run
        self.terminated = False  # SIGTERM stopped the run (its progress was saved)

    def _first_time(self, kind: str, rec: Part | PurchaseOrder | InvalidRecord, *, by_id: bool) -> bool:
        """False for a record this run already handled in the same version (queue retry, then stream).

        Only records read by id (the queue, ``--po``) and unreadable ones are remembered: a stream
        yields each readable record once, and remembering all of them would grow memory with every
        record of a backfill (an unreadable one may lack the updatedAt that keeps it from repeating).
        """
        ion_id, etag = _id_etag(rec)
        key = f"{kind}:{ion_id}"
        if self._handled.get(key) == etag:
            return False
        if by_id or isinstance(rec, InvalidRecord):
            self._handled[key] = etag
        return True

    # ---- the run -----------------------------------------------------------------------------

    def run(self, options: SyncOptions, *, lock: SyncLock | None = None) -> SyncReport:
        """Sync, holding the lock (a dry run takes no lock and writes nothing).

        Args:
            options: what to sync.
            lock: the sync lock, already held by the caller (the CLI takes it before it touches the
                state directory, token store included); None: the run takes it itself.

        Raises:
            LockedError: another sync holds the lock (nothing was done).
        """
        if options.dry_run:
            return self._run(options)
        if lock is not None:
            if not lock.held:
                raise RuntimeError("Syncer.run(lock=...) expects a lock the caller holds")
            return self._run(options)
        with SyncLock(self.settings.lock_path):
            return self._run(options)

    def _run(self, options: SyncOptions) -> SyncReport:
        started = self.now()
        report = SyncReport(dry_run=options.dry_run, started_at=started.isoformat())
        ion_before, qbo_before = self.ion.request_count, self.qbo.request_count
        qbo_kinds_before = dict(self.qbo.counts)
        state = self.store.load()
        self._state = state
        self._report = report
        self._options = options
        self._started = started
        self._cap = started - timedelta(seconds=self.settings.cursor_overlap_seconds)
        # The ledger (what ionqbo last wrote, per record) only saves requests; lookups are the truth.
        # Written under other settings (item name template, accounts, mappings) it is forgotten.
        # The hash is kept with the entries (one SQLite transaction), so a crash between the ledger's
        # commit and the state file's cannot leave entries trusted under settings they were not written with.
        config = self._config_hash()
        self._ledger_ok = state.ledger_tag() == config
        if not self._ledger_ok and not options.dry_run:
            state.reset_ledger(config)
            self._ledger_ok = True
        try:
            self._prepare_ion(options)
            if options.po_ids:
                self._sync_pos(self.ion.purchase_orders_by_id(list(options.po_ids)), stream=None)
            else:
                self._retry_queue(state)
                if options.parts:
                    self._sync_parts(self.ion.changed_parts(self._since(state, PART_KIND)), stream="parts")
                statuses = list(dict.fromkeys([*self.settings.po_statuses, CANCELED]))
                self._sync_pos(
                    self.ion.changed_purchase_orders(self._since(state, PO_KIND), statuses),
                    stream="purchase_orders",
                )
        except Terminated as exc:
            shutdown.ignore_further()  # what follows is the save: a second SIGTERM must not cut it
            self.terminated = True
            report.exit_code = int(ExitCode.UNAVAILABLE)
            report.error = (f"{exc} after {(self.now() - started).total_seconds():.0f} s: what was done is saved "
                            "(the ledger holds every write QBO confirmed) and the next run resumes\n"
                            "  fix: nothing to do; if systemd stopped it for running too long, see IONQBO_RUN_DEADLINE")
        except AuthError as exc:
            report.exit_code = int(exc.exit_code)
            report.error = str(exc)
        except ApiError as exc:
            if exc.exit_code != ExitCode.UNAVAILABLE:
                raise
            report.exit_code = int(ExitCode.UNAVAILABLE)
            report.error = self._unavailable_text(exc)
        finally:
            finished = self.now()
            report.finished_at = finished.isoformat()
            report.duration_seconds = (finished - started).total_seconds()
            report.requests = {"ion": self.ion.request_count - ion_before, "qbo": self.qbo.request_count - qbo_before}
            report.qbo_requests_by_kind = {
                k: v - qbo_kinds_before.get(k, 0) for k, v in self.qbo.counts.items() if v - qbo_kinds_before.get(k, 0)
            }
        if report.exit_code == ExitCode.OK:
            queued = [e for e in state.queue.values()]
            if report.failures or (queued and not options.po_ids):
                report.exit_code = int(ExitCode.PARTIAL)
                self._report_queued_elsewhere(state)
        report.cursors = {s: (c.isoformat() if c else None) for s, c in state.cursors.items()}
        if not options.dry_run:
            state.last_run = {
                "started_at": report.started_at,
                "finished_at": report.finished_at,
                "duration_seconds": round(report.duration_seconds, 3),
                "exit_code": report.exit_code,
                "purchase_orders": vars(report.purchase_orders).copy(),
                "parts": vars(report.parts).copy(),
                "failed": len(report.failures),
                "requests": dict(report.requests),
                "error": report.error,
            }
            self.store.save(state)
        return report

    def _unavailable_text(self, exc: ApiError) -> str:
        """One line naming the service that gave up (the breaker's account, when one tripped), one fix."""
        error: ApiError = exc
        for side in (self.qbo, self.ion):
            tripped = getattr(getattr(side, "breaker", None), "error", None)
            if isinstance(tripped, ApiError) and not isinstance(exc, DeadlineReachedError):
                error = tripped
                break
        message = " ".join(error.message.split())
        if "next run" not in message:
            message += " (nothing was lost: the next run resumes)"
        hint = error.hint or "nothing to do if it passes; if it lasts, check the network and the service's status"
        return f"{message}\n  fix: {hint}"

    def _check_deadline(self, doing: str) -> None:
        """Between chunks: past the run's deadline, stop (the chunk before is saved)."""
        deadline = run_deadline()
        if deadline.expired():
            raise deadline.error(doing)

    def _prepare_ion(self, options: SyncOptions) -> None:
        """ION's live schema: a missing required field stops here, before any write (IonSchemaError).

        What the schema does not let this run read goes into the report once; reads that compare
        _etags (where ION cannot filter by updatedAt) ask the ledger what was synced last.
        """
        prepare = getattr(self.ion, "prepare", None)
        if prepare is None:
            return
        prepare()
        self._report.ion_schema = list(self.ion.schema_notes())  # type: ignore[attr-defined]
        hook = getattr(self.ion, "set_known_etags", None)
        if hook is not None:
            hook(self._known_etag if options.since is None else None)

    def _known_etag(self, kind: str, ion_id: str) -> str | None:
        key = f"{kind}:{ion_id}"
        if not self._ledger_ok or key in self._state.queue:
            return None
        entry = self._state.ledger.get(key)
        return entry.ion_etag if entry is not None else None

    def _report_queued_elsewhere(self, state: State) -> None:
        """Queued records not retried this run (not yet due) still count as out of step."""
        seen = {(f.kind, f.ion_id) for f in self._report.failures}
        for entry in state.queue.values():
            if (entry.kind, entry.ion_id) not in seen:
                self._report.failures.append(_failure_from_entry(entry))

    def _since(self, state: State, kind: str) -> datetime | None:
        if self._options.since is not None:
            return self._options.since
        cursor = state.cursors.get(STREAMS[kind])
        if cursor is None:
            return None
        return cursor - timedelta(seconds=self.settings.cursor_overlap_seconds)

    def _advance(self, stream: str | None, value: datetime | None) -> None:
        if stream is None or value is None or self._options.dry_run:
            return
        self._state.advance_cursor(stream, min(value, self._cap))

    # ---- the queue ---------------------------------------------------------------------------

    def _retry_queue(self, state: State) -> None:
        now = self.now()
        due_parts = [e.ion_id for e in state.due(PART_KIND, now)]
        due_pos = [e.ion_id for e in state.due(PO_KIND, now)]
        if due_parts:
            log.info("retrying %d queued part(s)", len(due_parts))
            found = self._sync_parts(self.ion.parts_by_id(due_parts), stream=None)
            self._forget_missing(PART_KIND, due_parts, found)
        if due_pos:
            log.info("retrying %d queued purchase order(s)", len(due_pos))
            found = self._sync_pos(self.ion.purchase_orders_by_id(due_pos), stream=None, from_queue=True)
            self._forget_missing(PO_KIND, due_pos, found)

    def _forget_missing(self, kind: str, wanted: list[str], found: set[str]) -> None:
        for ion_id in wanted:
            if ion_id not in found and not self._options.dry_run:
                log.warning("%s %s is queued but ION no longer has it; removed from the queue", kind, ion_id)
                self._state.queue.pop(f"{kind}:{ion_id}", None)

    # ---- parts -------------------------------------------------------------------------------

    def _sync_parts(self, records: Iterable[Part | InvalidRecord], *, stream: str | None) -> set[str]:
        seen: set[str] = set()
        done = 0
        for chunk in _chunks(records, CHUNK):
            self._check_deadline("with parts left to sync")
            parts: list[Part] = []
            for rec in chunk:
                if stream is None:  # read by id: the caller forgets the ids ION no longer has
                    seen.add(rec.ion_id if isinstance(rec, InvalidRecord) else rec.id)
                if not self._first_time(PART_KIND, rec, by_id=stream is None):
                    continue
                if isinstance(rec, InvalidRecord):
                    self._fail(PART_KIND, rec.ion_id, rec.error)
                elif self._unchanged_since_last_sync(PART_KIND, rec.id, rec.etag, rec.updated_at):
                    self._report.count(Outcome(PART_KIND, rec.id, "unchanged", name=None))
                else:
                    parts.append(rec)
            if parts:
                self._upsert_items(parts, update_existing=True)
            self._items.clear()  # the ledger holds their ids; keeping whole QBO objects would grow memory
            self._advance(stream, _max_time(chunk))
            self._save()
            done += len(chunk)
            if self.progress:
                self.progress("parts", done)
        return seen

    def _unchanged_since_last_sync(self, kind: str, ion_id: str, etag: str, updated_at: datetime | None) -> bool:
        """ION says this record has not changed since ionqbo last wrote it: skip it at no QBO cost."""
        key = f"{kind}:{ion_id}"
        if key in self._state.queue:
            return False
        entry = self._state.ledger.get(key)
        if entry is None or not etag or entry.ion_etag != etag:
            return False
        return self._ledger_ok

    def _config_hash(self) -> str:
        """Settings that change the payloads: a change re-syncs everything it touches."""
        s = self.settings
        raw = json.dumps([s.item_name_template, s.qbo_ap_account_id, s.qbo_fee_account_id,
                          s.qbo_inventory_asset_account_id, s.qbo_income_account_id, s.qbo_cogs_account_id,
                          repr(self._mappings)])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def _upsert_items(self, parts: list[Part], *, update_existing: bool) -> dict[str, str]:
        """Create missing items (and update changed ones); returns ION part id -> QBO item id."""
        refs = self._references()
        ids: dict[str, str] = {}
        desired_by_part: dict[str, tuple[Part, dict[str, Any]]] = {}
        for part in parts:
            try:
                body = mapping.part_to_item(part, refs, start_date=self._start_date(part))
            except RecordError as exc:
                self._fail(PART_KIND, part.id, exc)
                continue
            name_key = body["Name"].lower()
            owner = self._item_owner.get(name_key)
            if owner is not None and owner != part.id:
                self._fail(PART_KIND, part.id, MappingError(
                    f"part {part.id}: its QBO item name {body['Name']!r} is the same as part {owner}'s",
                    kind=PART_KIND, ion_id=part.id, field="partNumber",
                    hint="change IONQBO_ITEM_NAME_TEMPLATE or the part number so the names differ "
                         "(QBO item names must be unique; ':' becomes '-')"))
                continue
            self._item_owner[name_key] = part.id
            desired_by_part[part.id] = (part, body)
        if not update_existing:
            # Items this ionqbo created or matched before, unchanged in QBO since: no lookup needed.
            for part_id in list(desired_by_part):
                entry = self._state.ledger.get(f"{PART_KIND}:{part_id}")
                if entry is not None and entry.qbo_id and entry.qbo_id not in self._stale_items and self._ledger_ok:
                    ids[part_id] = entry.qbo_id
                    del desired_by_part[part_id]
        self._lookup_items([b["Name"] for _, b in desired_by_part.values()])
        writes: list[_Write] = []
        for part, body in desired_by_part.values():
            existing = self._items.get(body["Name"].lower())
            if existing is not None and existing.get("Sku") and existing.get("Sku") != part.part_number:
                self._fail(PART_KIND, part.id, MappingError(
                    f"part {part.id}: QBO item {body['Name']!r} (Id {existing.get('Id')}) belongs to SKU "
                    f"{existing.get('Sku')!r}, not {part.part_number!r}",
                    kind=PART_KIND, ion_id=part.id, field="partNumber",
                    hint="rename one of the two QBO items, or change IONQBO_ITEM_NAME_TEMPLATE"))
                continue
            if existing is not None and not update_existing:
                ids[part.id] = str(existing["Id"])
                continue
            change = diff(body, existing, mapping.ITEM_OWNED_FIELDS if existing else tuple(body))
            if change.action == "unchanged":
                assert existing is not None
                ids[part.id] = str(existing["Id"])
                self._succeed(PART_KIND, part.id, existing, part.etag, part.updated_at, body)
                self._report.count(Outcome(PART_KIND, part.id, "unchanged", str(existing["Id"]), body["Name"]))
                continue
            writes.append(_Write(
                kind=PART_KIND, ion_id=part.id, entity="Item", operation=change.action, body=change.body,
                desired=body, owned=tuple(mapping.ITEM_OWNED_FIELDS), name=body["Name"],
                action="created" if change.action == "create" else "updated", changes=change.fields,
                ion_updated_at=part.updated_at, ion_etag=part.etag, payload_hash=_hash(body),
            ))
        for w, entity in self._write_all(writes):
            self._items[w.name.lower()] = entity
            ids[w.ion_id] = str(entity.get("Id", "(new)"))
        return ids

    def _start_date(self, part: Part) -> date:
        when = part.created_at or self._started
        return when.astimezone(UTC).date()

    def _lookup_items(self, names: Iterable[str]) -> None:
        missing = [n for n in dict.fromkeys(names) if n.lower() not in self._items]
        for chunk in _slices(missing, LOOKUP_SIZE):
            where = f"Name IN ({', '.join(quote(n) for n in chunk)})"
            for item in self.qbo.query_all("Item", where):
                self._items[str(item.get("Name", "")).lower()] = item

    # ---- purchase orders -----------------------------------------------------------------------

    def _sync_pos(
        self, records: Iterable[PurchaseOrder | InvalidRecord], *, stream: str | None, from_queue: bool = False
    ) -> set[str]:
        seen: set[str] = set()
        done = 0
        in_scope = set(self.settings.po_statuses)
        for chunk in _chunks(records, CHUNK):
            self._check_deadline("with purchase orders left to sync")
            pos: list[PurchaseOrder] = []
            for rec in chunk:
                ion_id = rec.ion_id if isinstance(rec, InvalidRecord) else rec.id
                if stream is None:
                    seen.add(ion_id)
                if not self._first_time(PO_KIND, rec, by_id=stream is None):
                    continue
                if isinstance(rec, InvalidRecord):
                    self._fail(PO_KIND, rec.ion_id, rec.error)
                elif rec.status not in in_scope and rec.status != CANCELED:
                    # Left the statuses that are sent (e.g. back to DRAFT): nothing to do; unqueue it.
                    if not self._options.dry_run:
                        self._state.queue.pop(f"{PO_KIND}:{rec.id}", None)
                elif self._unchanged_since_last_sync(PO_KIND, rec.id, rec.etag, rec.updated_at):
                    self._report.count(Outcome(PO_KIND, rec.id, "unchanged", name=rec.id))
                else:
                    pos.append(rec)
            if pos:
                self._sync_po_chunk(pos)
            self._items.clear()
            self._advance(stream, _max_time(chunk))
            self._save()
            done += len(chunk)
            if self.progress:
                self.progress("purchase_orders", done)
        return seen

    def _sync_po_chunk(self, pos: list[PurchaseOrder]) -> None:
        refs = self._references()
        active = [po for po in pos if po.status != CANCELED]
        canceled = [po for po in pos if po.status == CANCELED]
        # 1. items the item lines need: created first, never updated here (the parts stream does that).
        needed: dict[str, Part] = {}
        for po in active:
            for line in po.lines:
                if line.part is not None and not line.expense_code:
                    needed.setdefault(line.part.id, line.part)
        item_ids = self._upsert_items(list(needed.values()), update_existing=False) if needed else {}
        # 2. map (pure)
        desired: dict[str, tuple[PurchaseOrder, dict[str, Any]]] = {}
        for po in active:
            missing_parts = [ln.part.id for ln in po.lines if ln.part is not None and not ln.expense_code
                             and ln.part.id not in item_ids]
            if missing_parts:
                self._fail(PO_KIND, po.id, MappingError(
                    f"purchase order {po.id}: the QBO item for part(s) {', '.join(missing_parts)} could not be "
                    "created (see the part errors)", kind=PO_KIND, ion_id=po.id, field="purchaseOrderLines.part",
                    hint="fix the part error first; this purchase order is retried with it"))
                continue
            try:
                desired[po.id] = (po, mapping.po_to_payload(po, refs, item_ids))
            except RecordError as exc:
                self._fail(PO_KIND, po.id, exc)
        # 3. look the QBO POs up by DocNumber, in bulk
        existing = self._lookup_pos([*desired, *(po.id for po in canceled)])
        # 4. diff (pure)
        writes: list[_Write] = []
        for doc, (po, body) in desired.items():
            found = existing.get(doc, [])
            if len(found) > 1:
                self._fail(PO_KIND, po.id, _duplicates_error(po.id, found))
                continue
            current = found[0] if found else None
            change = diff(body, current, mapping.PO_OWNED_FIELDS)
            if change.action == "unchanged":
                assert current is not None
                self._succeed(PO_KIND, po.id, current, po.etag, po.updated_at, body)
                self._report.count(Outcome(PO_KIND, po.id, "unchanged", str(current.get("Id")), doc))
                continue
            writes.append(_Write(
                kind=PO_KIND, ion_id=po.id, entity="PurchaseOrder", operation=change.action, body=change.body,
                desired=body, owned=tuple(mapping.PO_OWNED_FIELDS), name=doc,
                action="created" if change.action == "create" else "updated", changes=change.fields,
                ion_updated_at=po.updated_at, ion_etag=po.etag, payload_hash=_hash(body),
                part_ids=tuple(ln.part.id for ln in po.lines if ln.part is not None and not ln.expense_code),
            ))
        for po in canceled:
            found = existing.get(po.id, [])
            if len(found) > 1:
                self._fail(PO_KIND, po.id, _duplicates_error(po.id, found))
                continue
            current = found[0] if found else None
            if current is None or current.get("POStatus") == "Closed":
                # Never sent, or already closed: nothing to do.
                if current is not None:
                    self._succeed(PO_KIND, po.id, current, po.etag, po.updated_at, {"POStatus": "Closed"})
                elif not self._options.dry_run:
                    self._state.queue.pop(f"{PO_KIND}:{po.id}", None)
                qbo_id = str(current.get("Id")) if current is not None else None
                self._report.count(Outcome(PO_KIND, po.id, "unchanged", qbo_id, po.id))
                continue
            body = mapping.close_payload(current)
            writes.append(_Write(
                kind=PO_KIND, ion_id=po.id, entity="PurchaseOrder", operation="update", body=body,
                desired={"POStatus": "Closed"}, owned=("POStatus",), name=po.id, action="closed",
                changes=[FieldChange("POStatus", str(current.get("POStatus") or "Open"), "Closed")],
                ion_updated_at=po.updated_at, ion_etag=po.etag, payload_hash=_hash({"POStatus": "Closed"}),
            ))
        self._write_all(writes)

    def _lookup_pos(self, docs: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for chunk in _slices(list(dict.fromkeys(docs)), LOOKUP_SIZE):
            where = f"DocNumber IN ({', '.join(quote(d) for d in chunk)})"
            for po in self.qbo.query_all("PurchaseOrder", where):
                found.setdefault(str(po.get("DocNumber", "")), []).append(po)
        return found

    # ---- writes ----------------------------------------------------------------------------------

    def _write_all(self, writes: list[_Write]) -> list[tuple[_Write, dict[str, Any]]]:
        """Write in batches of 30; re-read and re-diff on stale objects and duplicates. Returns successes."""
        done: list[tuple[_Write, dict[str, Any]]] = []
        if self._options.dry_run:
            for w in writes:
                self._report.count(Outcome(w.kind, w.ion_id, w.action, w.body.get("Id"), w.name, w.changes))
                done.append((w, {**w.desired, "Id": w.body.get("Id", "(new)")}))
            return done
        pending = writes
        for round_no in range(1, WRITE_ROUNDS + 1):
            retry: list[_Write] = []
            for batch in _slices(pending, BATCH_SIZE):
                items = [BatchItem(bid=f"b{i}", operation=w.operation, entity=w.entity, body=w.body)
                         for i, w in enumerate(batch)]
                with shutdown.critical():  # SIGTERM waits for the answer to be recorded
                    self._write_batch(batch, items, round_no, retry, done)
            if not retry:
                break
            pending = retry
        return done

    def _write_batch(self, batch: list[_Write], items: list[BatchItem], round_no: int, retry: list[_Write],
                     done: list[tuple[_Write, dict[str, Any]]]) -> bool:
        """Send one batch and record its outcomes; True when its answer was lost (looked up instead)."""
        try:
            answer = self.qbo.batch(items, request_id=self._request_id(batch, round_no))
        except RetriableApiError:
            # The batch may or may not have reached QBO (a timeout, a dropped connection, 5xx
            # after the client's retries with the same requestid). Never trust the requestid
            # alone (peers.md 2.2): look the creates up; what exists is done, the rest is
            # written again in the next round, or the run ends (exit 5) and the next run
            # looks them up before writing.
            if round_no == WRITE_ROUNDS:
                raise
            again, found = self._after_lost_batch(batch)
            retry.extend(again)
            done.extend(found)
            return True
        results = {r.bid: r for r in answer}
        for i, w in enumerate(batch):
            result = results.get(f"b{i}")
            if result is None:
                self._fail(w.kind, w.ion_id, TransientRecordError(
                    f"{_label(w.kind)} {w.ion_id}: QBO's batch answer had no result for it",
                    kind=w.kind, ion_id=w.ion_id))
            elif result.fault is None and result.entity is not None:
                self._succeed(w.kind, w.ion_id, result.entity, w.ion_etag, w.ion_updated_at, w.desired)
                self._report.count(Outcome(w.kind, w.ion_id, w.action, str(result.entity.get("Id")),
                                           w.name, w.changes))
                done.append((w, result.entity))
            else:
                next_try = self._handle_fault(w, result.fault, last_round=round_no == WRITE_ROUNDS)
                if next_try is not None:
                    retry.append(next_try)
        return False

    def _after_lost_batch(
        self, batch: list[_Write]
    ) -> tuple[list[_Write], list[tuple[_Write, dict[str, Any]]]]:
        """Split a batch whose answer was lost: writes to send again, and creates QBO already holds."""
        again: list[_Write] = []
        found: list[tuple[_Write, dict[str, Any]]] = []
        for w in batch:
            if w.operation != "create":
                again.append(w)  # an update carries its SyncToken: a second apply is refused (5010)
                continue
            current = self._reread(w)
            if current is None:
                again.append(w)
                continue
            change = diff(w.desired, current, w.owned)
            if change.action == "unchanged":
                self._succeed(w.kind, w.ion_id, current, w.ion_etag, w.ion_updated_at, w.desired)
                self._report.count(Outcome(w.kind, w.ion_id, w.action, str(current.get("Id")), w.name, w.changes))
                found.append((w, current))
            else:
                again.append(_Write(**{**vars(w), "operation": "update", "body": change.body}))
        return again, found

    def _handle_fault(self, w: _Write, fault: QboFault | None, *, last_round: bool) -> _Write | None:
        """Decide what a per-item fault means; returns a write to try again this run, or None."""
        code = fault.code if fault is not None else ""
        if code in ("2500", "610") and w.part_ids and not self._options.dry_run:
            # A reference QBO no longer accepts: maybe an item made inactive or deleted. Forget the
            # ledger's item ids so the retry looks them up again.
            for part_id in w.part_ids:
                entry = self._state.ledger.get(f"{PART_KIND}:{part_id}")
                if entry is not None:
                    self._stale_items.add(entry.qbo_id)
        if fault is not None and code in ("5010", "6140", "6240") and not last_round:
            # 5010 stale SyncToken: someone changed it; 6140/6240: a create that already happened
            # (a crash or a lost answer). Read what QBO holds now, diff again, write what is left.
            current = self._reread(w)
            if current is not None:
                change = diff(w.desired, current, w.owned if w.action != "closed" else ("POStatus",))
                if change.action == "unchanged":
                    self._succeed(w.kind, w.ion_id, current, w.ion_etag, w.ion_updated_at, w.desired)
                    action = "unchanged" if w.operation == "update" or code != "6140" else w.action
                    self._report.count(Outcome(w.kind, w.ion_id, action, str(current.get("Id")), w.name))
                    return None
                body = mapping.close_payload(current) if w.action == "closed" else change.body
                return _Write(**{**vars(w), "operation": "update", "body": body,
                                 "changes": w.changes or change.fields})
        if fault is None:
            error: RecordError = TransientRecordError(
                f"{_label(w.kind)} {w.ion_id}: QBO returned neither the object nor a fault", kind=w.kind,
                ion_id=w.ion_id)
        elif fault.retryable:
            error = TransientRecordError(
                f"{_label(w.kind)} {w.ion_id}: QBO could not take the write now ({fault.code}: {fault.message})",
                kind=w.kind, ion_id=w.ion_id, code=f"qbo_{fault.code}", hint="retried automatically")
        else:
            detail = getattr(fault, "detail", None) or ""
            error = QboRejectedError(
                f"{_label(w.kind)} {w.ion_id}: QBO refused the {w.operation} ({fault.code} {fault.message}"
                f"{': ' + detail if detail else ''})",
                kind=w.kind, ion_id=w.ion_id, code=f"qbo_{fault.code}",
                hint=_qbo_hint(fault.code or ""))
        self._fail(w.kind, w.ion_id, error)
        return None

    def _reread(self, w: _Write) -> dict[str, Any] | None:
        if w.entity == "PurchaseOrder":
            found = self._lookup_pos([w.name]).get(w.name, [])
            return found[0] if len(found) == 1 else None
        self._items.pop(w.name.lower(), None)
        self._lookup_items([w.name])
        return self._items.get(w.name.lower())

    def _request_id(self, batch: list[_Write], round_no: int) -> str:
        """Deterministic for the same writes in the same run and round (QBO: <= 36 chars for batch).

        The same batch sent again (a retry after a lost answer) carries the same requestid and bIds,
        so QBO replays the first answer instead of writing twice. The run start is part of it so
        that a later run, after someone deleted the object in QBO, really writes again.
        """
        raw = json.dumps([self.realm_id, self._started.isoformat(), round_no,
                          [(w.entity, w.operation, w.ion_id, w.payload_hash, w.body.get("SyncToken")) for w in batch]])
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    # ---- outcomes ---------------------------------------------------------------------------------

    def _succeed(self, kind: str, ion_id: str, entity: dict[str, Any], etag: str,
                 updated_at: datetime | None, desired: dict[str, Any]) -> None:
        if self._options.dry_run:
            return
        self._state.record_success(kind, ion_id, LedgerEntry(
            qbo_id=str(entity.get("Id", "")),
            sync_token=str(entity.get("SyncToken", "")),
            payload_sha256=_hash(desired),
            ion_updated_at=updated_at,
            ion_etag=etag,
            synced_at=self.now(),
        ))

    def _fail(self, kind: str, ion_id: str, error: RecordError) -> None:
        error.kind = error.kind or kind
        error.ion_id = error.ion_id or ion_id
        log.warning("%s", error.message, extra={"ion_id": ion_id, "kind": kind, "error_code": error.code})
        entry = None
        if not self._options.dry_run:
            entry = self._state.record_failure(kind, ion_id, error, self.now())
        again = any((f.kind, f.ion_id) == (kind, ion_id) for f in self._report.failures)
        self._report.failures = [f for f in self._report.failures if (f.kind, f.ion_id) != (kind, ion_id)]
        self._report.failures.append(Failure(
            kind=kind, ion_id=ion_id, code=error.code, message=error.message, hint=error.hint, field=error.field,
            parked=not error.retryable, attempts=entry.attempts if entry is not None else 1,
        ))
        if not again:  # a part that fails in the parts stream and again for a PO is one failure
            self._report.count(Outcome(kind, ion_id, "failed"))

    def _save(self) -> None:
        if not self._options.dry_run:
            with shutdown.critical(grace=5):
                self.store.save(self._state)

    # ---- reference data ---------------------------------------------------------------------------

    def _references(self) -> mapping.References:
        """Vendors, accounts, classes, currencies and preferences: read once per run, when needed.

        Between runs they are cached in the state file and brought up to date with one change-data-
        capture request (QBO keeps 30 days of changes and returns at most 1000 objects; past either
        limit, or on any doubt, everything is read again). Preferences are re-read after an hour.
        """
        if self._refs is None:
            raw = self._reference_data()
            self._refs = mapping.References.build(
                vendors=raw["Vendor"],
                accounts=raw["Account"],
                classes=raw["Class"],
                company_currencies=raw.get("CompanyCurrency", []),
                preferences=raw["Preferences"],
                ap_account_id=self.settings.qbo_ap_account_id,
                fee_account_id=self.settings.qbo_fee_account_id,
                asset_account_id=self.settings.qbo_inventory_asset_account_id,
                income_account_id=self.settings.qbo_income_account_id,
                cogs_account_id=self.settings.qbo_cogs_account_id,
                mappings=self._mappings,
                item_name_template=self.settings.item_name_template,
            )
        return self._refs

    def _reference_data(self) -> dict[str, Any]:
        now = self.now()
        cache = self._state.cache.get(REFS_CACHE_KEY)
        raw: dict[str, Any] | None = None
        if isinstance(cache, dict) and cache.get("realm_id") == self.realm_id and cache.get("version") == 1:
            raw = self._refresh_cached(cache, now)
        if raw is None:
            prefs = self.qbo.preferences()
            # QBO's own time of that answer (not this machine's clock): the next CDC asks for what
            # changed since then, and the reads below come after it, so nothing falls between.
            read_at = self._qbo_time(now)
            raw = {"Preferences": prefs, "preferences_at": read_at.isoformat(), "fetched_at": read_at.isoformat()}
            for entity in self._ref_entities(prefs):
                raw[entity] = list(self.qbo.query_all(entity, "Active IN (true, false)"))
            raw.setdefault("CompanyCurrency", [])
        raw.update({"version": 1, "realm_id": self.realm_id})
        if not self._options.dry_run:
            self._state.cache[REFS_CACHE_KEY] = raw
        return raw

    def _qbo_time(self, fallback: datetime) -> datetime:
        """QBO's time of its last answer (the ``time`` in its body), else this machine's clock."""
        when = getattr(self.qbo, "last_time", None)
        return when if isinstance(when, datetime) and when.tzinfo is not None else fallback

    @staticmethod
    def _ref_entities(prefs: dict[str, Any]) -> list[str]:
        body = prefs.get("Preferences", prefs)
        multicurrency = bool((body.get("CurrencyPrefs") or {}).get("MultiCurrencyEnabled"))
        return ["Vendor", "Account", "Class", *(["CompanyCurrency"] if multicurrency else [])]

    def _refresh_cached(self, cache: dict[str, Any], now: datetime) -> dict[str, Any] | None:
        """The cached reference data brought up to date with one CDC request, or None to read afresh."""
        try:
            fetched = datetime.fromisoformat(str(cache["fetched_at"]))
            prefs_at = datetime.fromisoformat(str(cache["preferences_at"]))
            raw = {k: cache[k] for k in ("Vendor", "Account", "Class", "CompanyCurrency", "Preferences")}
        except (KeyError, TypeError, ValueError):
            return None
        if fetched.tzinfo is None or prefs_at.tzinfo is None:
            return None
        # Both times are QBO's (the time of its answers), so this machine's clock does not move the
        # schedule: QBO's CDC answer says how old the cache is, and QBO refuses a changedSince past
        # its 30 days (then, as on any doubt, everything is read again).
        entities = [*self._ref_entities(raw["Preferences"]), "Item"]
        try:
            changes = self.qbo.cdc(entities, fetched - CDC_SKEW)
        except (AuthError, UnavailableError):
            raise
        except ApiError as exc:
            if getattr(getattr(self.qbo, "breaker", None), "error", None) is not None:
                raise  # QBO gave up: nothing more goes to it in this run
            log.info("change data capture failed (%s); reading the reference data again", exc)
            return None
        qbo_now = self._qbo_time(now)
        if qbo_now - fetched > CDC_MAX_AGE or fetched - qbo_now > CDC_SKEW:
            # Past the re-read schedule, or a time from a clock that ran ahead of QBO's (a cache
            # written by an older ionqbo by this machine's clock): read everything again.
            log.info("reference data cached at %s, QBO's time now %s: reading it again", fetched.isoformat(),
                     qbo_now.isoformat())
            return None
        if sum(len(v) for v in changes.values()) >= CDC_MAX_OBJECTS:
            return None
        for entity, changed in changes.items():
            if entity == "Item":
                # An item changed in QBO (renamed, made inactive, deleted): forget what the ledger
                # knows of it, so the next PO that needs it looks it up again.
                tokens = {e.qbo_id: e.sync_token for k, e in self._state.ledger.items() if k.startswith(PART_KIND)}
                for obj in changed:
                    item_id = str(obj.get("Id"))
                    same = str(obj.get("SyncToken")) == tokens.get(item_id) and obj.get("Active", True) is not False
                    if not same or obj.get("status") == "Deleted":
                        self._stale_items.add(item_id)
                continue
            by_id = {str(obj.get("Id")): obj for obj in raw.get(entity, [])}
            for obj in changed:
                if obj.get("status") == "Deleted":
                    by_id.pop(str(obj.get("Id")), None)
                else:
                    by_id[str(obj.get("Id"))] = obj
            raw[entity] = list(by_id.values())
        if qbo_now - prefs_at > PREFERENCES_TTL or prefs_at - qbo_now > CDC_SKEW:
            raw["Preferences"] = self.qbo.preferences()
            prefs_at = self._qbo_time(qbo_now)
        raw["preferences_at"] = prefs_at.isoformat()
        raw["fetched_at"] = qbo_now.isoformat()
        return raw


# ---- helpers -----------------------------------------------------------------------------------------


def _load_mappings(settings: Settings) -> mapping.ExplicitMappings:
    if settings.mappings_file is None:
        return mapping.ExplicitMappings()
    return mapping.parse_mappings(settings.mappings_file.read_text(encoding="utf-8"))


def _chunks(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _slices(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _id_etag(rec: Part | PurchaseOrder | InvalidRecord) -> tuple[str, str]:
    if isinstance(rec, InvalidRecord):
        return rec.ion_id, "invalid"
    return rec.id, rec.etag


def _max_time(chunk: list[Any]) -> datetime | None:
    times = [r.updated_at for r in chunk if getattr(r, "updated_at", None) is not None]
    return max(times) if times else None


def _hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _label(kind: str) -> str:
    return kind.replace("_", " ")


def _duplicates_error(doc: str, found: list[dict[str, Any]]) -> RecordError:
    ids = ", ".join(str(p.get("Id")) for p in found)
    return QboRejectedError(
        f"purchase order {doc}: QBO holds {len(found)} purchase orders with DocNumber {doc} (Ids {ids})",
        kind=PO_KIND, ion_id=doc, field="DocNumber", code="qbo_duplicate_docnumber",
        hint="delete or renumber the extra ones in QuickBooks; ionqbo will not guess which one is right",
    )


_QBO_HINTS = {
    "2500": "a vendor, item, account or class it refers to is missing or inactive in QuickBooks: "
            "make it active, or fix the mapping (run `ionqbo check-mappings`)",
    "610": "an object it refers to was deleted or made inactive in QuickBooks: restore it, then `ionqbo retry`",
    "6000": "QuickBooks refused it for a business rule (see the reason); fix the record or the QBO setting",
    "6070": "the line amount does not equal quantity x unit cost; report this to the ionqbo maintainers",
    "6140": "another transaction already uses this number in QuickBooks",
    "6240": "another item, vendor, customer or employee already uses this name in QuickBooks",
    "2020": "a required field is missing: check the ION record and the QBO settings",
}


def _qbo_hint(code: str) -> str:
    return _QBO_HINTS.get(code, "see the reason; fix the record in ION or the setting in QuickBooks, then "
                                 "`ionqbo retry`")


def _failure_from_entry(entry: Any) -> Failure:
    return Failure(kind=entry.kind, ion_id=entry.ion_id, code=entry.code, message=entry.message, hint=entry.hint,
                   field=entry.field, parked=entry.parked, attempts=entry.attempts)


def exit_code_for(report: SyncReport) -> ExitCode:
    return ExitCode(report.exit_code)


__all__ = ["SyncOptions", "Syncer", "UnavailableError", "utcnow"]
