"""`ionqbo check-mappings`: audit everything a sync depends on, read-only on both sides.

What is checked, section by section:

- **connectivity**: ION (the API key's user) and QBO (CompanyInfo) answer and accept ionqbo.
- **ION schema**: every query in :mod:`ionqbo.ion.queries` against ION's live schema (introspection).
- **QBO settings**: purchase orders, inventory tracking, custom transaction numbers, multicurrency
  against the currencies in use, class tracking per line when classes are in use, and the accounts
  named by QBO_AP_ACCOUNT_ID, the three inventory account settings and QBO_FEE_ACCOUNT_ID.
- **references**: every supplier, expense code, class, fee name and currency on the ION purchase
  orders in scope (the statuses of IONQBO_PO_STATUSES and the queued ones), resolved with the very
  functions the sync uses (:func:`ionqbo.mapping.reference_gap`, :func:`ionqbo.mapping.po_to_payload`),
  so the check and the sync never disagree; unresolved names come with near matches.
- **parts**: item names QBO would refuse, names that collide after the naming rule, and names
  taken in QBO by an item with another SKU.
- **purchase orders**: whatever else would stop a purchase order (no lines, a line with neither a
  part nor an expense code, amounts, an unreadable record).

Every finding is a :class:`Check` with a severity: ``blocking`` (a sync would queue records, or
cannot run), ``warning`` (worth a look; nothing is refused) or ``ok``. The exit code is 4 when
authorization is needed, 2 for a settings problem, 5 when a side is unavailable, 3 when anything
else blocks, else 0. Nothing here writes to ION or QBO: only queries, reads and introspection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from tabulate import tabulate

from ionqbo import mapping
from ionqbo.clock import CLOCK_FIX, SKEW_WARNING, describe_skew
from ionqbo.config import Settings
from ionqbo.errors import ApiError, AuthError, ConfigError, ExitCode, IonqboError, MappingError
from ionqbo.ion.models import InvalidRecord, Part, PurchaseOrder
from ionqbo.ion.schema import NEEDS, Plan, notification_problems
from ionqbo.qbo.client import quote
from ionqbo.state import StateStore

# The order sections are shown in when their worst findings are alike.
SECTIONS = ("connectivity", "ION schema", "QBO settings", "references", "parts", "purchase orders")
# Same bulk size as the sync's item lookup (``Name IN (...)``; MAXRESULTS is at most 1000).
ITEM_LOOKUP_SIZE = 300
# Text output: more `ok` rows than this in one section are folded into one summary row.
OK_ROWS_SHOWN = 25
CANCELED = "CANCELED"
_PLACEHOLDER_ITEM = "0"  # po_to_payload needs an item id per part; the parts are checked on their own
_SETTINGS_PATH = "Settings > Account and settings"


class Severity(StrEnum):
    """How much a finding matters to the next sync."""

    BLOCKING = "blocking"
    WARNING = "warning"
    OK = "ok"


_RANK = {Severity.BLOCKING: 0, Severity.WARNING: 1, Severity.OK: 2}


@dataclass
class Check:
    """One finding: what was checked, how it stands, and what to do about it.

    Attributes:
        section: one of :data:`SECTIONS`.
        subject: what was checked, e.g. ``supplier "ACME Inc"`` or ``QBO_AP_ACCOUNT_ID``.
        severity: blocking, warning or ok.
        message: the finding (for ok: what it resolves to).
        fix: what a person should do; empty for ok.
        used_by: the ION records (``PO 1045``, ``part 12``) the finding concerns.
        code: a stable machine name (``supplier``, ``expense_code``, ``preference``, ``schema``...).
        exit_code: set when the finding calls for its own exit code (2, 4 or 5) rather than 3.
    """

    section: str
    subject: str
    severity: Severity
    message: str
    fix: str = ""
    used_by: list[str] = field(default_factory=list)
    code: str = ""
    exit_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        data = asdict(self)
        data["severity"] = str(self.severity)
        return data


@dataclass
class CheckResult:
    """Everything `check-mappings` found, and the counts of what it read."""

    checks: list[Check] = field(default_factory=list)
    purchase_orders: int = 0
    parts: int = 0
    company: str | None = None
    requests: dict[str, int] = field(default_factory=lambda: {"ion": 0, "qbo": 0})

    def add(self, check: Check) -> None:
        """Record one finding."""
        self.checks.append(check)

    @property
    def blocking(self) -> list[Check]:
        """The blocking findings."""
        return [c for c in self.checks if c.severity == Severity.BLOCKING]

    @property
    def warnings(self) -> list[Check]:
        """The warnings."""
        return [c for c in self.checks if c.severity == Severity.WARNING]

    @property
    def exit_code(self) -> int:
        """4 authorization, 2 settings, 5 unavailable, 3 anything else blocking, 0 when nothing blocks."""
        codes = {c.exit_code for c in self.blocking if c.exit_code is not None}
        for code in (ExitCode.AUTH, ExitCode.USAGE, ExitCode.UNAVAILABLE):
            if int(code) in codes:
                return int(code)
        return int(ExitCode.PARTIAL) if self.blocking else int(ExitCode.OK)

    def sections(self) -> dict[str, list[Check]]:
        """Findings by section, blocking first within each; sections with blocking findings first."""
        grouped: dict[str, list[Check]] = {}
        for check in self.checks:
            grouped.setdefault(check.section, []).append(check)
        for rows in grouped.values():
            rows.sort(key=lambda c: _RANK[c.severity])  # stable: keeps the order found within a rank

        def order(name: str) -> tuple[int, int]:
            worst = min(_RANK[c.severity] for c in grouped[name])
            return worst, SECTIONS.index(name) if name in SECTIONS else len(SECTIONS)

        return {name: grouped[name] for name in sorted(grouped, key=order)}

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` output: one object."""
        return {
            "ok": self.exit_code == ExitCode.OK,
            "exit_code": self.exit_code,
            "blocking": len(self.blocking),
            "warnings": len(self.warnings),
            "company": self.company,
            "checked": {"purchase_orders": self.purchase_orders, "parts": self.parts},
            "sections": {name: [c.to_dict() for c in rows] for name, rows in self.sections().items()},
            "requests": dict(self.requests),
        }


# ---- collaborators -------------------------------------------------------------------------------


class IonReader(Protocol):
    """What the check needs from :class:`ionqbo.ion.client.IonClient` (reads only)."""

    request_count: int

    def me(self) -> dict[str, Any]: ...

    def plan(self) -> Plan: ...

    def changed_purchase_orders(
        self, since: datetime | None, statuses: Sequence[str] | None
    ) -> Iterator[PurchaseOrder | InvalidRecord]: ...

    def purchase_orders_by_id(self, ids: Sequence[str]) -> Iterator[PurchaseOrder | InvalidRecord]: ...

    def changed_parts(self, since: datetime | None) -> Iterator[Part | InvalidRecord]: ...


class QboReader(Protocol):
    """What the check needs from :class:`ionqbo.qbo.client.QboClient` (reads only)."""

    request_count: int

    def query_all(self, entity: str, where: str = "", order_by: str = "") -> Iterator[dict[str, Any]]: ...

    def preferences(self) -> dict[str, Any]: ...

    def company_info(self) -> dict[str, Any]: ...


# ---- the run -------------------------------------------------------------------------------------


def run_checks(settings: Settings, *, ion: IonReader, qbo: QboReader) -> CheckResult:
    """Audit everything a sync depends on; reads ION and QBO, writes to neither.

    Args:
        settings: the loaded settings.
        ion: the ION client.
        qbo: the QBO client.

    Returns:
        The findings; ``result.exit_code`` is the command's exit code.
    """
    result = CheckResult()
    ion_before, qbo_before = ion.request_count, qbo.request_count
    try:
        _Audit(settings, ion, qbo, result).run()
    finally:
        result.requests = {"ion": ion.request_count - ion_before, "qbo": qbo.request_count - qbo_before}
    return result


@dataclass
class _Use:
    """Where one name is used: the POs, in the order found."""

    pos: dict[str, None] = field(default_factory=dict)
    currency: str | None = None

    def add(self, po_id: str) -> None:
        self.pos[po_id] = None

    @property
    def labels(self) -> list[str]:
        return [f"PO {p}" for p in self.pos]


class _Audit:
    def __init__(self, settings: Settings, ion: IonReader, qbo: QboReader, result: CheckResult) -> None:
        self.settings = settings
        self.ion = ion
        self.qbo = qbo
        self.result = result

    def add(self, section: str, subject: str, severity: Severity, message: str, fix: str = "", *,
            used_by: Iterable[str] = (), code: str = "", exit_code: int | None = None) -> None:
        self.result.add(Check(section, subject, severity, message, fix, list(used_by), code, exit_code))

    # -- the flow --

    def run(self) -> None:
        mappings = self._mappings()
        ion_ok = self._ion_connectivity()
        qbo_ok = self._qbo_connectivity()
        self._clocks()
        if ion_ok:
            ion_ok = self._schema()
        pos: list[PurchaseOrder] = []
        parts: list[Part] = []
        if ion_ok:
            pos = self._read_pos()
            parts = self._read_parts(pos)
        if not qbo_ok:
            return
        refs = self._references(mappings)
        if refs is None:
            return
        self._settings_checks(refs, pos, parts)
        if ion_ok:
            self._reference_checks(refs, pos)
            self._unused_mappings(mappings, pos)
            self._part_checks(refs, parts, pos)
            self._po_checks(refs, pos)

    # -- settings the check itself needs --

    def _mappings(self) -> mapping.ExplicitMappings:
        path = self.settings.mappings_file
        if path is None:
            return mapping.ExplicitMappings()
        try:
            return mapping.parse_mappings(path.read_text(encoding="utf-8"))
        except OSError as exc:
            problems = [f"{mapping.MAPPINGS_SOURCE}: cannot read {path}: {exc.strerror or exc}"]
            fix = f"point {mapping.MAPPINGS_SOURCE} at a readable TOML file"
        except ConfigError as exc:
            problems, fix = exc.problems, exc.hint or ""
        for problem in problems:
            self.add("QBO settings", mapping.MAPPINGS_SOURCE, Severity.BLOCKING, problem, fix, code="settings",
                     exit_code=int(ExitCode.USAGE))
        return mapping.ExplicitMappings()

    # -- connectivity --

    def _api_problem(self, side: str, exc: IonqboError) -> None:
        code = int(exc.exit_code) if exc.exit_code in (ExitCode.AUTH, ExitCode.UNAVAILABLE) else None
        what = "authorization" if isinstance(exc, AuthError) else "connection"
        fix = exc.hint or ("check the network and the service's status page, then run the check again"
                           if code == ExitCode.UNAVAILABLE else "see the message")
        self.add("connectivity", side, Severity.BLOCKING, f"{what} failed: {exc.message}", fix,
                 code="connectivity", exit_code=code)

    def _ion_connectivity(self) -> bool:
        try:
            user = self.ion.me()
        except (AuthError, ApiError) as exc:
            if isinstance(exc, AuthError) or exc.exit_code == ExitCode.UNAVAILABLE:
                self._api_problem("ION", exc)
                return False
            # ION answered, and the key was accepted, but `me` failed (e.g. the schema differs):
            # the schema check below names what is missing.
            self.add("connectivity", "ION", Severity.WARNING,
                     f"ION answered but the API key's user could not be read: {exc.message}",
                     "see the ION schema section", code="connectivity")
            return True
        org = user.get("organization") if isinstance(user.get("organization"), dict) else {}
        who = user.get("name") or user.get("email") or user.get("id")
        where = f" of {org.get('domain')}" if org and org.get("domain") else ""
        self.add("connectivity", "ION", Severity.OK,
                 f"connected to {self.settings.ion_api_url} as {who}{where}", code="connectivity")
        return True

    def _qbo_connectivity(self) -> bool:
        try:
            info = self.qbo.company_info()
        except (AuthError, ApiError) as exc:
            self._api_problem("QBO", exc)
            return False
        name = info.get("CompanyName") or info.get("LegalName") or "(unnamed company)"
        self.result.company = str(name)
        self.add("connectivity", "QBO", Severity.OK,
                 f'connected to "{name}" ({self.settings.qbo_environment})', code="connectivity")
        return True

    def _clocks(self) -> None:
        """This machine's clock against ION's and QBO's (their Date headers)."""
        for side, client in (("ION", self.ion), ("QBO", self.qbo)):
            watch = getattr(client, "skew", None)
            seconds = getattr(watch, "seconds", None)
            if not isinstance(seconds, float):
                continue
            if abs(seconds) > SKEW_WARNING:
                self.add("connectivity", f"clock ({side})", Severity.WARNING,
                         f"{describe_skew(side, seconds)} (its Date header: {getattr(watch, 'date', '?')}); "
                         f"ionqbo takes change times from {side}, but retry times and backoffs use this clock",
                         CLOCK_FIX, code="clock")
            else:
                self.add("connectivity", f"clock ({side})", Severity.OK,
                         f"this machine's clock is within {max(abs(seconds), 1):.0f} s of {side}'s", code="clock")

    # -- ION schema --

    def _schema(self) -> bool:
        """Each thing ionqbo reads: where this ION keeps it, or what is missing and the setting that maps it.

        False when a sync could not read ION at all (records are then not read here either).
        """
        section = "ION schema"
        try:
            plan = self.ion.plan()
        except ConfigError as exc:  # a wrong [ion_fields] override
            for problem in exc.problems:
                self.add(section, "ion_fields", Severity.BLOCKING, problem, exc.hint or "", code="schema",
                         exit_code=int(ExitCode.USAGE))
            return False
        except (AuthError, ApiError) as exc:
            self._api_problem("ION", exc)
            return False
        for need in NEEDS:
            found = plan.found.get(need.key)
            if found is not None:
                how = " (set in [ion_fields])" if found.source == "setting" else ""
                where = "the root purchaseOrderLines query" if found.path == ("__root__",) else found.where
                first = found.source == "schema" and ".".join(found.path).startswith(need.candidates[0])
                self.add(section, need.key, Severity.OK, f"{need.what}: {where}{how}",
                         code="schema_field" if first else "schema")
                continue
            missing = next((m for m in plan.missing if m.need.key == need.key), None)
            if missing is None:
                continue  # its owner type is not read (reported on the owner)
            if need.required:
                self.add(section, need.key, Severity.BLOCKING, missing.message(), missing.fix(), code="schema",
                         exit_code=int(ExitCode.USAGE))
            else:
                self.add(section, need.key, Severity.WARNING,
                         missing.message() + ": a sync goes on without it and says so in its report",
                         missing.fix(), code="schema")
        for problem in plan.problems:
            if problem.startswith("IONQBO_PO_STATUSES"):
                self.add(section, "IONQBO_PO_STATUSES", Severity.BLOCKING, problem.split(": ", 1)[1],
                         "set IONQBO_PO_STATUSES to status names this ION has", code="schema",
                         exit_code=int(ExitCode.USAGE))
                continue
            self.add(section, "queries", Severity.BLOCKING, problem,
                     "report it with the schema saved by `ionqbo check-mappings --save-ion-schema FILE`",
                     code="schema")
        for note in plan.notes:
            routine = note.startswith(("purchase order lines are read", "purchase orders: changes",
                                       "parts: changes"))
            self.add(section, "reads", Severity.OK if routine else Severity.WARNING, note, code="schema")
        for read, label in ((plan.po, "purchase orders"), (plan.part, "parts")):
            if read is None:
                continue
            sent = [f"{f}: {', '.join(sorted(ops))}" for f, ops in sorted(read.filter_ops.items())
                    if f in ("id", "status", "updatedAt")]
            sorts = [v for v in (read.sort_updated, read.sort_id) if v]
            self.add(section, f"{label} reads", Severity.OK,
                     f"{read.root}: {read.strategy} reads; filters {'; '.join(sent) or 'none'}; "
                     f"sorts {', '.join(sorts) or 'none'}", code="schema")
        if plan.statuses is not None:
            sent = [plan.status_out(s) for s in dict.fromkeys([*self.settings.po_statuses, CANCELED])]
            have = [s for s in sent if s in plan.statuses]
            self.add(section, "statuses", Severity.OK,
                     f"status values sent: {', '.join(have)} (ION has {', '.join(plan.statuses)})", code="schema")
        for problem in notification_problems(plan.schema):
            self.add(section, "notifications", Severity.WARNING, problem,
                     "ION notifications of failed syncs cannot be sent; the report and the log still name them",
                     code="schema")
        return not plan.blocking and not plan.problems

    # -- reading ION --

    def _read_pos(self) -> list[PurchaseOrder]:
        statuses = list(self.settings.po_statuses)
        in_scope = set(statuses)
        pos: dict[str, PurchaseOrder] = {}
        queued = self._queued_po_ids()
        try:
            records = list(self.ion.changed_purchase_orders(None, statuses))
            read = {_rec_id(r) for r in records}
            wanted = [i for i in queued if i not in read]
            if wanted:
                records += list(self.ion.purchase_orders_by_id(wanted))
        except (AuthError, ApiError) as exc:
            self._cannot_read("purchase orders", "purchase_order", exc)
            return []
        for rec in records:
            if isinstance(rec, InvalidRecord):
                self.add("purchase orders", f"PO {rec.ion_id}", Severity.BLOCKING,
                         f"cannot be read: {rec.error.message}", rec.error.hint or "correct the record in ION",
                         used_by=[f"PO {rec.ion_id}"], code="purchase_order")
            elif rec.status in in_scope:  # a queued PO that left the statuses is dropped by the sync
                pos[rec.id] = rec
        self.result.purchase_orders = len(pos)
        return list(pos.values())

    def _queued_po_ids(self) -> list[str]:
        try:
            state = StateStore(self.settings.state_path).load()
        except IonqboError as exc:
            self.add("purchase orders", "state file", Severity.WARNING,
                     f"queued records not checked: {exc.message}", exc.hint or "", code="state")
            return []
        return [e.ion_id for e in state.queue.values() if e.kind == "purchase_order"]

    def _read_parts(self, pos: list[PurchaseOrder]) -> list[Part]:
        parts: dict[str, Part] = {}
        try:
            records = list(self.ion.changed_parts(None))
        except (AuthError, ApiError) as exc:
            self._cannot_read("parts", "part", exc)
            records = []
        for rec in records:
            if isinstance(rec, InvalidRecord):
                self.add("parts", f"part {rec.ion_id}", Severity.BLOCKING,
                         f"cannot be read: {rec.error.message}", rec.error.hint or "correct the part in ION",
                         used_by=[f"part {rec.ion_id}"], code="part")
            else:
                parts[rec.id] = rec
        for po in pos:  # the parts on item lines, also when the parts read failed
            for line in po.lines:
                if line.part is not None and not line.expense_code:
                    parts.setdefault(line.part.id, line.part)
        self.result.parts = len(parts)
        return list(parts.values())

    def _cannot_read(self, what: str, code: str, exc: IonqboError) -> None:
        unavailable = exc.exit_code in (ExitCode.AUTH, ExitCode.UNAVAILABLE)
        self.add(what, f"ION {what}", Severity.BLOCKING, f"cannot be read: {exc.message}",
                 exc.hint or "see the ION schema section: a sync would fail the same way",
                 code=code, exit_code=int(exc.exit_code) if unavailable else None)

    # -- reading QBO --

    def _references(self, mappings: mapping.ExplicitMappings) -> mapping.References | None:
        try:
            prefs = self.qbo.preferences()
            multicurrency = bool(mapping.References.build(preferences=prefs).multicurrency)
            refs = mapping.References.build(
                vendors=list(self.qbo.query_all("Vendor")),
                accounts=list(self.qbo.query_all("Account")),
                classes=list(self.qbo.query_all("Class")),
                company_currencies=list(self.qbo.query_all("CompanyCurrency")) if multicurrency else [],
                preferences=prefs,
                settings=self.settings,
                mappings=mappings,
            )
        except (AuthError, ApiError) as exc:
            self._api_problem("QBO", exc)
            return None
        return refs

    # -- QBO settings --

    def _settings_checks(self, refs: mapping.References, pos: list[PurchaseOrder], parts: list[Part]) -> None:
        prefs = refs.preferences
        section = "QBO settings"
        # Purchase orders on. Where QBO reports it is unverified (qbo-api.md section 5): an
        # OtherPrefs pair; a missing flag is a warning, never a guess.
        enabled = _flag(prefs, "VendorAndPurchasesPrefs", "PurchaseOrderEnabled")
        if enabled is False:
            self.add(section, "purchase orders", Severity.BLOCKING, "purchase orders are turned off in QuickBooks",
                     f"turn on purchase orders in QuickBooks ({_SETTINGS_PATH} > Expenses > Purchase orders)",
                     code="preference")
        elif enabled is None:
            self.add(section, "purchase orders", Severity.WARNING,
                     "QuickBooks does not say whether purchase orders are on",
                     f"check {_SETTINGS_PATH} > Expenses > Purchase orders", code="preference")
        else:
            self.add(section, "purchase orders", Severity.OK, "on", code="preference")
        qty = _dig(prefs, "ProductAndServicesPrefs", "QuantityOnHand")
        if qty is None:
            self.add(section, "inventory tracking", Severity.WARNING,
                     "QuickBooks does not say whether quantity on hand is tracked",
                     f"check {_SETTINGS_PATH} > Sales > Products and services > Track quantity on hand",
                     code="preference")
        elif not _truthy(qty):
            self.add(section, "inventory tracking", Severity.BLOCKING if parts else Severity.WARNING,
                     f"quantity on hand is not tracked, so the {len(parts)} ION part(s) cannot become "
                     "inventory items", f"turn on \"Track inventory quantity on hand\" in QuickBooks "
                     f"({_SETTINGS_PATH} > Sales > Products and services; QuickBooks Online Plus or Advanced)",
                     code="preference")
        else:
            self.add(section, "inventory tracking", Severity.OK, "on", code="preference")
        custom = _flag(prefs, "VendorAndPurchasesPrefs", "UseCustomTxnNumbers")
        if custom is False:
            # Whether QBO keeps an API-supplied DocNumber with custom numbers off is unverified
            # (qbo-api.md section 4). The DocNumber is how the sync finds its POs again: if QBO
            # renumbered them, every run would create another copy. Safe choice: block.
            self.add(section, "custom transaction numbers", Severity.BLOCKING,
                     "custom transaction numbers are off: QuickBooks may number the purchase orders itself "
                     "and not keep the ION PO number ionqbo finds them by",
                     f"turn on \"Custom transaction numbers\" in QuickBooks ({_SETTINGS_PATH} > Expenses)",
                     code="preference")
        elif custom is None:
            self.add(section, "custom transaction numbers", Severity.WARNING,
                     "QuickBooks does not say whether custom transaction numbers are on",
                     f"check {_SETTINGS_PATH} > Expenses > Custom transaction numbers", code="preference")
        else:
            self.add(section, "custom transaction numbers", Severity.OK, "on", code="preference")
        self._currency_setting(refs, pos)
        self._class_setting(refs, pos)
        self._account_settings(refs, pos, parts)

    def _currency_setting(self, refs: mapping.References, pos: list[PurchaseOrder]) -> None:
        home = refs.home_currency
        in_use = sorted({_po_currency(po) or (home or "?") for po in pos})
        foreign = [c for c in in_use if c != home]
        state = "on" if refs.multicurrency else "off"
        message = f"{state}; home currency {home or 'unknown'}; in use: {', '.join(in_use) or 'none'}"
        if not refs.multicurrency and foreign:
            # The per-PO problem is reported under references (the sync's own text); here, the setting.
            self.add("QBO settings", "multicurrency", Severity.BLOCKING, message,
                     f"turn on multicurrency in QuickBooks ({_SETTINGS_PATH} > Advanced > Currency; it cannot "
                     f"be turned off again), or buy in {home} in ION", code="preference",
                     used_by=[f"PO {po.id}" for po in pos if (_po_currency(po) or home) != home])
        else:
            self.add("QBO settings", "multicurrency", Severity.OK, message, code="preference")

    def _class_setting(self, refs: mapping.References, pos: list[PurchaseOrder]) -> None:
        classed = [po for po in pos if any((ln.accounting_class or "").strip() for ln in po.lines)]
        if not classed:
            return
        if refs.class_tracking_per_line:
            self.add("QBO settings", "class tracking per line", Severity.OK, "on", code="preference")
            return
        per_txn = _truthy(_dig(refs.preferences, "AccountingInfoPrefs", "ClassTrackingPerTxn"))
        self.add("QBO settings", "class tracking per line", Severity.BLOCKING,
                 "ION lines carry classes but QuickBooks tracks classes "
                 + ("per transaction, not per line" if per_txn else "not at all"),
                 f'turn on "Track classes" with "One to each row in transaction" in QuickBooks ({_SETTINGS_PATH} > '
                 "Advanced > Categories), or clear the classes in ION",
                 used_by=[f"PO {po.id}" for po in classed], code="preference")

    def _account_settings(self, refs: mapping.References, pos: list[PurchaseOrder], parts: list[Part]) -> None:
        needs_items = bool(parts)
        wanted: list[tuple[str, str, frozenset[str], bool]] = [
            ("QBO_AP_ACCOUNT_ID", refs.ap_account_id, frozenset({mapping.AP_ACCOUNT_TYPE}), True),
            ("QBO_INVENTORY_ASSET_ACCOUNT_ID", refs.asset_account_id, frozenset({mapping.ASSET_ACCOUNT_TYPE}),
             needs_items),
            ("QBO_INCOME_ACCOUNT_ID", refs.income_account_id, mapping.INCOME_ACCOUNT_TYPES, needs_items),
            ("QBO_COGS_ACCOUNT_ID", refs.cogs_account_id, frozenset({mapping.COGS_ACCOUNT_TYPE}), needs_items),
        ]
        for setting, account_id, types, needed in wanted:
            self._account_setting(refs, setting, account_id, types, needed=needed)
        fee_pos = [po for po in pos if po.fees]
        unmapped = [po for po in fee_pos
                    if any(refs.mappings.lookup("fees", f.name) is None for f in po.fees if f.name.strip())]
        self._account_setting(refs, "QBO_FEE_ACCOUNT_ID", refs.fee_account_id, mapping.EXPENSE_ACCOUNT_TYPES,
                              needed=bool(unmapped), used_by=[f"PO {po.id}" for po in unmapped])

    def _account_setting(self, refs: mapping.References, setting: str, account_id: str, types: frozenset[str], *,
                         needed: bool, used_by: list[str] | None = None) -> None:
        allowed = _or_list(types)
        severity = Severity.BLOCKING if needed else Severity.WARNING
        if not account_id:
            if needed and setting == "QBO_FEE_ACCOUNT_ID":
                # Not a settings error for the sync: each fee without a [fees] mapping fails its PO
                # (reported under references, with the sync's own words).
                self.add("QBO settings", setting, Severity.WARNING, f"{setting} is not set",
                         f"set {setting} to the id of a QBO account of type {allowed}, or map every fee name "
                         f"under [fees] in {mapping.MAPPINGS_SOURCE}", used_by=used_by or (), code="account")
            elif needed:
                # A sync refuses to start without it (settings error): exit 2, like the sync.
                self.add("QBO settings", setting, Severity.BLOCKING, f"{setting} is not set",
                         f"set {setting} to the id of a QBO account of type {allowed}", used_by=used_by or (),
                         code="account", exit_code=int(ExitCode.USAGE))
            else:
                self.add("QBO settings", setting, Severity.OK, "not set (nothing in scope needs it)", code="account")
            return
        acct = refs.account(account_id)
        if acct is None:
            state = "inactive" if account_id in refs.index.accounts_by_id else "not found"
            self.add("QBO settings", setting, severity, f"account {account_id}: no active QBO account has this id ({state})",
                     f"set {setting} to the id of an active account of type {allowed} (the number in its "
                     "QuickBooks URL)" + (", or make it active" if state == "inactive" else ""),
                     used_by=used_by or (), code="account")
            return
        label = f'account {account_id} "{acct.get("FullyQualifiedName") or acct.get("Name")}"'
        if acct.get("AccountType") not in types:
            self.add("QBO settings", setting, severity,
                     f"{label} is of type {acct.get('AccountType') or 'unknown'}, not {allowed}",
                     f"set {setting} to the id of an account of type {allowed}", used_by=used_by or (),
                     code="account")
            return
        self.add("QBO settings", setting, Severity.OK, f"{label} ({acct.get('AccountType')})", code="account")

    # -- references: names in use --

    def _reference_checks(self, refs: mapping.References, pos: list[PurchaseOrder]) -> None:
        suppliers: dict[tuple[str, str | None], tuple[str, _Use]] = {}
        uses: dict[str, dict[str, tuple[str, _Use]]] = {"expense_code": {}, "class": {}, "fee": {}}
        for po in pos:
            if po.supplier is not None and po.supplier.name.strip():
                name = po.supplier.name
                per_currency = mapping.name_key(name) in refs.mappings.supplier_currencies
                currency = (_po_currency(po) or refs.home_currency) if per_currency else None
                suppliers.setdefault((mapping.name_key(name), currency), (name, _Use(currency=currency)))[1].add(po.id)
            for line in po.lines:
                code = (line.expense_code or "").strip()
                if code:
                    uses["expense_code"].setdefault(mapping.name_key(code), (code, _Use()))[1].add(po.id)
                klass = (line.accounting_class or "").strip()
                if klass:
                    uses["class"].setdefault(mapping.name_key(klass), (klass, _Use()))[1].add(po.id)
            for fee in po.fees:
                if fee.name.strip():
                    uses["fee"].setdefault(mapping.name_key(fee.name), (fee.name.strip(), _Use()))[1].add(po.id)
        for (_, currency), (name, use) in suppliers.items():
            label = f'supplier "{name}"' + (f" ({currency})" if currency else "")
            gap = mapping.reference_gap(refs, "supplier", name, currency=currency)
            vendor = None if gap else mapping.resolve_vendor(refs, name, currency)
            self._reference(label, "supplier", gap, use, _describe(vendor, "vendor", "DisplayName"))
        resolvers = {"expense_code": mapping.resolve_expense_account, "class": mapping.resolve_class,
                     "fee": mapping.resolve_fee_account}
        for kind, names in uses.items():
            for name, use in names.values():
                gap = mapping.reference_gap(refs, kind, name)
                obj = None if gap else resolvers[kind](refs, name)
                what = "class" if kind == "class" else "account"
                self._reference(f'{kind.replace("_", " ")} "{name}"', kind, gap, use,
                                _describe(obj, what, "FullyQualifiedName", "Name"))
        self._currency_checks(refs, pos)

    def _reference(self, subject: str, kind: str, gap: mapping.Gap | None, use: _Use, resolved: str) -> None:
        if gap is not None:
            self.add("references", subject, Severity.BLOCKING, gap.message, gap.hint, used_by=use.labels, code=kind)
        else:
            self.add("references", subject, Severity.OK, f"-> {resolved}", used_by=use.labels, code=kind)

    def _currency_checks(self, refs: mapping.References, pos: list[PurchaseOrder]) -> None:
        """Currency problems exactly as the sync words them (from po_to_payload), one row per problem."""
        found: dict[tuple[str, str], tuple[str, _Use]] = {}
        codes: dict[str, _Use] = {}
        for po in pos:
            code = _po_currency(po) or refs.home_currency or "?"
            codes.setdefault(code, _Use()).add(po.id)
            for fld, message, hint in _payload_problems(po, refs):
                if fld == "currency":
                    found.setdefault((message, hint), (code, _Use()))[1].add(po.id)
        bad: set[str] = set()
        for (message, hint), (code, use) in found.items():
            bad.add(code)
            self.add("references", f"currency {code}", Severity.BLOCKING, message, hint, used_by=use.labels,
                     code="currency")
        for code, use in sorted(codes.items()):
            if code not in bad:
                where = "home currency" if code == refs.home_currency else "active in QuickBooks"
                self.add("references", f"currency {code}", Severity.OK, f"-> {where}", used_by=use.labels,
                         code="currency")

    def _unused_mappings(self, mappings: mapping.ExplicitMappings, pos: list[PurchaseOrder]) -> None:
        used: dict[str, set[str]] = {"suppliers": set(), "expense_codes": set(), "classes": set(), "fees": set()}
        for po in pos:
            if po.supplier is not None:
                used["suppliers"].add(mapping.name_key(po.supplier.name))
            for line in po.lines:
                used["expense_codes"].add(mapping.name_key(line.expense_code or ""))
                used["classes"].add(mapping.name_key(line.accounting_class or ""))
            used["fees"].update(mapping.name_key(f.name) for f in po.fees)
        tables: dict[str, Iterable[str]] = {t: getattr(mappings, t) for t in mapping.MAPPING_TABLES}
        tables["suppliers"] = [*tables["suppliers"], *mappings.supplier_currencies]
        for table, keys in tables.items():
            for key in keys:
                if key not in used[table]:
                    self.add("references", f'[{table}] "{key}"', Severity.WARNING,
                             f"this {mapping.MAPPINGS_SOURCE} entry is not used by any purchase order in scope",
                             "check the name against ION (names ignore case), or remove the entry",
                             code="unused_mapping")

    # -- parts --

    def _part_checks(self, refs: mapping.References, parts: list[Part], pos: list[PurchaseOrder]) -> None:
        used_by: dict[str, list[str]] = {}
        for po in pos:
            for line in po.lines:
                if line.part is not None and not line.expense_code:
                    used_by.setdefault(line.part.id, []).append(f"PO {po.id}")
        names: dict[str, list[Part]] = {}
        name_of: dict[str, str] = {}
        bad = 0
        for part in parts:
            users = [f"part {part.id}", *dict.fromkeys(used_by.get(part.id, []))]
            problems = _part_problems(part, refs)
            for fld, message, hint in problems:
                bad += 1
                self.add("parts", f'part {part.id} "{part.part_number}"', Severity.BLOCKING, message, hint,
                         used_by=users, code=f"part_{fld}" if fld else "part")
            try:
                name = mapping.item_name(part, refs.item_name_template)
            except MappingError:
                continue  # reported above (part_to_item names it)
            name_of[part.id] = name
            names.setdefault(name.lower(), []).append(part)
        for same in names.values():
            if len(same) < 2:
                continue
            ids = ", ".join(p.id for p in same)
            for part in same[1:]:  # the sync syncs the first and refuses the others
                bad += 1
                self.add("parts", f'part {part.id} "{part.part_number}"', Severity.BLOCKING,
                         f"its QBO item name {name_of[part.id]!r} is the same as that of part(s) {ids} after the naming "
                         "rule (':' becomes '-', case is ignored)",
                         "change IONQBO_ITEM_NAME_TEMPLATE or the part number so the names differ",
                         used_by=[f"part {p.id}" for p in same] + used_by.get(part.id, []), code="part_name_collision")
        bad += self._item_collisions(parts, name_of, used_by)
        if parts and not bad:
            self.add("parts", f"{len(parts)} part(s)", Severity.OK,
                     "every item name is valid and unique, and no QBO item with another SKU holds it", code="part")

    def _item_collisions(self, parts: list[Part], name_of: dict[str, str], used_by: dict[str, list[str]]) -> int:
        by_name = {name_of[p.id].lower(): p for p in parts if p.id in name_of}
        bad = 0
        wanted = list(dict.fromkeys(name_of[p.id] for p in parts if p.id in name_of))
        for start in range(0, len(wanted), ITEM_LOOKUP_SIZE):
            chunk = wanted[start:start + ITEM_LOOKUP_SIZE]
            where = f"Name IN ({', '.join(quote(n) for n in chunk)})"
            try:
                items = list(self.qbo.query_all("Item", where))
            except (AuthError, ApiError) as exc:
                self._api_problem("QBO", exc)
                return bad + 1
            for item in items:
                part = by_name.get(str(item.get("Name", "")).lower())
                if part is None:
                    continue
                users = [f"part {part.id}", *used_by.get(part.id, [])]
                subject = f'part {part.id} "{part.part_number}"'
                sku = item.get("Sku")
                if sku and sku != part.part_number:
                    bad += 1
                    self.add("parts", subject, Severity.BLOCKING,
                             f"QBO item {item.get('Name')!r} (Id {item.get('Id')}) belongs to SKU {sku!r}, "
                             f"not {part.part_number!r}",
                             "rename one of the two QBO items, or change IONQBO_ITEM_NAME_TEMPLATE",
                             used_by=users, code="part_item_taken")
                elif item.get("Type") and item.get("Type") != "Inventory":
                    self.add("parts", subject, Severity.WARNING,
                             f"QBO item {item.get('Name')!r} (Id {item.get('Id')}) is a {item.get('Type')} item: "
                             "ionqbo will keep its name, SKU, description and cost, but it does not track quantity",
                             "if it should track stock, make it an inventory item in QuickBooks", used_by=users,
                             code="part_item_type")
        return bad

    # -- purchase orders: anything else that would stop one --

    def _po_checks(self, refs: mapping.References, pos: list[PurchaseOrder]) -> None:
        bad = 0
        for po in pos:
            for fld, message, hint in _payload_problems(po, refs):
                if _reported_elsewhere(po, fld):
                    continue
                bad += 1
                self.add("purchase orders", f"PO {po.id}", Severity.BLOCKING, message, hint,
                         used_by=[f"PO {po.id}"], code=f"purchase_order_{fld.split('.')[-1].split('[')[0]}")
        if pos and not bad:
            self.add("purchase orders", f"{len(pos)} PO(s)", Severity.OK,
                     "no other problem (lines, amounts, address, numbers)", code="purchase_order")


# ---- helpers ---------------------------------------------------------------------------------------

_LINE_REF = re.compile(r"^purchaseOrderLines\[\d+\]\.(expenseCode|accountingClass)$")
_FEE_NAME = re.compile(r"^fees\[(\d+)\]\.name$")


def _reported_elsewhere(po: PurchaseOrder, fld: str) -> bool:
    """Whether a po_to_payload problem is one the references or settings sections already show."""
    if fld.startswith("QBO_") or fld == "currency" or _LINE_REF.match(fld):
        return True
    if fld == "supplier":
        return po.supplier is not None and bool(po.supplier.name.strip())
    fee = _FEE_NAME.match(fld)
    if fee:
        index = int(fee.group(1))
        return index < len(po.fees) and bool(po.fees[index].name.strip())
    return False


def _payload_problems(po: PurchaseOrder, refs: mapping.References) -> list[tuple[str, str, str]]:
    """Every problem the sync's mapping finds in this PO, as (field, message, hint)."""
    item_ids = {line.part.id: _PLACEHOLDER_ITEM for line in po.lines if line.part is not None}
    try:
        mapping.po_to_payload(po, refs, item_ids)
    except mapping.MappingProblems as exc:
        return list(exc.problems)
    except MappingError as exc:
        prefix = f"purchase order {po.id}: "
        message = exc.message[len(prefix):] if exc.message.startswith(prefix) else exc.message
        return [(exc.field or "", message, exc.hint or "")]
    return []


def _part_problems(part: Part, refs: mapping.References) -> list[tuple[str, str, str]]:
    """What the sync's mapping refuses in this part, without the account settings (checked once)."""
    try:
        mapping.part_to_item(part, refs, start_date=(part.created_at or datetime.now(UTC)).astimezone(UTC).date())
    except mapping.MappingProblems as exc:
        return [p for p in exc.problems if not p[0].startswith("QBO_")]
    except MappingError as exc:
        if (exc.field or "").startswith("QBO_"):
            return []
        prefix = f"part {part.id} ({part.part_number}): "
        message = exc.message[len(prefix):] if exc.message.startswith(prefix) else exc.message
        return [(exc.field or "", message, exc.hint or "")]
    return []


def _rec_id(rec: PurchaseOrder | InvalidRecord) -> str:
    return rec.ion_id if isinstance(rec, InvalidRecord) else rec.id


def _po_currency(po: PurchaseOrder) -> str | None:
    return po.currency.code.strip().upper() if po.currency and po.currency.code.strip() else None


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _flag(prefs: dict[str, Any], group: str, name: str) -> bool | None:
    """A purchase-side preference: ``Group.Name`` directly, else the ``OtherPrefs`` pair; None if absent."""
    direct = _dig(prefs, group, name)
    if direct is not None:
        return _truthy(direct)
    for pair in _dig(prefs, "OtherPrefs", "NameValue") or []:
        if isinstance(pair, dict) and pair.get("Name") == f"{group}.{name}":
            return _truthy(pair.get("Value"))
    return None


def _or_list(values: Iterable[str]) -> str:
    items = sorted(values)
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)


def _describe(obj: dict[str, Any] | None, what: str, *keys: str) -> str:
    if obj is None:
        return f"QBO {what}"
    name = next((obj.get(k) for k in keys if obj.get(k)), None)
    number = f" {obj['AcctNum']}" if what == "account" and obj.get("AcctNum") else ""
    return f'QBO {what} {obj.get("Id")}{number} "{name}"'


# ---- rendering -------------------------------------------------------------------------------------

_MARK = {Severity.BLOCKING: "BLOCKING", Severity.WARNING: "warning", Severity.OK: "ok"}


def _used(labels: list[str], limit: int = 4) -> str:
    if len(labels) <= limit:
        return ", ".join(labels)
    return ", ".join(labels[:limit]) + f" +{len(labels) - limit} more"


def render_checks(result: CheckResult) -> str:
    """The findings as tables, one per section, blocking problems first, each with its fix."""
    out: list[str] = []
    company = f' for QBO company "{result.company}"' if result.company else ""
    out.append(f"check-mappings{company}: {result.purchase_orders} purchase order(s) and {result.parts} part(s) "
               "in scope")
    for name, rows in result.sections().items():
        out.append("")
        out.append(f"== {name} ==")
        fields = [r for r in rows if r.severity == Severity.OK and r.code == "schema_field"]
        if fields:  # one row for the fields found under the first name tried; the others are shown
            rows = [r for r in rows if r not in fields]
            rows.append(Check(name, f"{len(fields)} fields", Severity.OK,
                              "found under the names ionqbo tries first (each one: --json)", code="schema_field"))
        shown = rows
        folded = 0
        oks = [r for r in rows if r.severity == Severity.OK]
        if len(oks) > OK_ROWS_SHOWN:
            shown = [r for r in rows if r.severity != Severity.OK] + oks[:OK_ROWS_SHOWN]
            folded = len(oks) - OK_ROWS_SHOWN
        table = [[_MARK[r.severity], r.subject, r.message, _used(r.used_by), r.fix] for r in shown]
        if folded:
            table.append([_MARK[Severity.OK], f"{folded} more", "resolve (see --json)", "", ""])
        headers = ["status", "checked", "finding", "used by", "fix"]
        widths: list[int | None] = [None, 32, 60, 24, 60]
        keep = [i for i in range(len(headers)) if i < 3 or any(row[i] for row in table)]  # drop empty columns
        out.append(tabulate([[row[i] for i in keep] for row in table], headers=[headers[i] for i in keep],
                            tablefmt="simple", maxcolwidths=[widths[i] for i in keep]))
    out.append("")
    blocking, warnings = len(result.blocking), len(result.warnings)
    verdict = {
        0: "nothing blocks a sync",
        2: "a setting must be fixed first",
        3: "a sync would queue the records named above until these are fixed",
        4: "authorization is needed (see the fix)",
        5: "ION or QBO could not be reached; run the check again",
    }.get(result.exit_code, "")
    out.append(f"{blocking} blocking problem(s), {warnings} warning(s): {verdict} (exit {result.exit_code})")
    return "\n".join(out)


__all__ = ["Check", "CheckResult", "Severity", "render_checks", "run_checks"]
