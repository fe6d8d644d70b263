"""The ION emulator: a Keycloak-style token endpoint and ``/graphql`` over an in-memory store.

It behaves as the public ION API is documented (``reference/ion-api.md``), executing
``ion-schema.graphql`` (a copy of ``reference/ion-schema.graphql``) with graphql-core.

HTTP interface:

- ``POST /realms/api-keys/protocol/openid-connect/token`` (and the legacy ``/auth/realms/...``):
  client credentials, in the form (client_secret_post) or HTTP Basic (client_secret_basic).
- ``POST /graphql``: one ``{"query", "variables", "operationName"}`` object or a JSON array of them.
  ``Authorization: Bearer x``, ``Token x`` or a bare ``x``; a missing, unknown or expired token is 401.

Admin interface (never counted, never faulted, no auth), each also a Python method:

- ``POST /_admin/load`` (:meth:`IonEmulator.load`) replaces the store; ``GET /_admin/dump`` (:meth:`dump`).
- ``POST /_admin/purchase-orders`` (add), ``POST /_admin/purchase-orders/{id}`` (update),
  ``POST /_admin/purchase-orders/{id}/lines/{line_id}``, ``.../fees/{fee_id}``,
  ``POST /_admin/parts[/{id}]``, ``POST /_admin/suppliers[/{id}]``. Unknown id: 404.
- ``GET|POST /_admin/faults`` (a :class:`Faults` configuration), ``POST /_admin/faults/clear``.
- ``GET /_admin/counters``, ``POST /_admin/counters/reset``, ``GET /_admin/notifications``,
  ``POST /_admin/expire-tokens``.

Load format (camelCase, like the GraphQL nodes)::

    {"suppliers": [{"id": 1, "name": "Acme Corp"}],
     "currencies": [{"id": 1, "code": "USD", "name": "US Dollar"}],
     "users": [{"id": 42, "name": "Ada", "email": "ada@acme.com"}],
     "parts": [{"id": 10, "partNumber": "820412-001", "revision": "B", "description": "...",
                "trackingType": "LOT", "cost": 12.5, "unitOfMeasure": "each", "isLatestRevision": true}],
     "purchaseOrders": [{"id": 1042, "status": "ORDERED", "supplierId": 1, "currencyId": 1,
                         "shippingAddress": {...}, "notes": "...", "estimatedTotalCost": 50,
                         "purchaseOrderLines": [{"id": 5001, "partId": 10, "quantity": 4, ...}],
                         "fees": [{"id": 7, "name": "Shipping", "value": 25}]}],
     "organization": {"id": 7, "domain": "acme.com"},   # optional: what `me.organization` returns
     "me": 42}                                          # optional: the API key's user (default: the first)

``_etag``, ``createdAt`` and ``updatedAt`` may be given; otherwise they are set. Values are kept
as given, also malformed ones, so that tests can serve hostile records; GraphQL then answers as
it must (a null in a non-null field is an error in ``errors``). Numbers loaded over HTTP are kept
as ``Decimal`` and written back to JSON digit for digit; a NaN or infinity cannot be a GraphQL
Float and comes back as an error for that field.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import json
import math
import operator
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from graphql import (
    GraphQLEnumType,
    GraphQLError,
    GraphQLLeafType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    build_schema,
    graphql_sync,
)
from graphql.execution import ExecutionContext

from ionqbo.sandbox.httpd import Faults, Request, Response, text_response

SCHEMA_PATH = Path(__file__).with_name("ion-schema.graphql")
TOKEN_PATHS = frozenset({
    "/realms/api-keys/protocol/openid-connect/token",
    "/auth/realms/api-keys/protocol/openid-connect/token",  # legacy Keycloak prefix (ion-api.md 1.1)
})
KINDS = ("suppliers", "currencies", "users", "parts", "purchaseOrders")
_CHILDREN = ("purchaseOrderLines", "fees")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_PREFIX = "arrayconnection:"  # graphql-relay offset cursors (ion-api.md 3.1)


# ---- values ---------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    """A stored or given time as an aware datetime (naive text is read as UTC), or None."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_datetime_input(value: Any) -> datetime:
    """DateTime input (filters): ISO-8601 with a UTC offset.

    ION's behaviour for a time without an offset is not documented; guessing a zone could move a
    sync cursor by hours, so the emulator refuses it.
    """
    if not isinstance(value, str):
        raise TypeError(f"DateTime must be an ISO-8601 string, not {value!r:.40}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"DateTime cannot represent {value!r:.40}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"DateTime {value!r:.40} has no UTC offset")
    return parsed


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    return value.isoformat() if isinstance(value, date) else value


def _id_key(value: Any) -> tuple[int, int, str]:
    """Sort key for ids: integers (or integer text) numerically, anything else after, as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value, "")
    if isinstance(value, str) and value.isdigit():
        return (0, int(value), "")
    return (1, 0, str(value))


def _cursor(index: int) -> str:
    return base64.b64encode(f"{_CURSOR_PREFIX}{index}".encode()).decode("ascii")


def _cursor_index(cursor: str) -> int:
    # graphql-relay silently restarts from the first edge on an unreadable cursor; that would make a
    # client loop, so the emulator answers an error instead (the safe reading of "not documented").
    try:
        text = base64.b64decode(cursor.encode("ascii"), validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeError):
        text = ""
    number = text.removeprefix(_CURSOR_PREFIX)
    if not text.startswith(_CURSOR_PREFIX) or not number.isdigit():
        raise GraphQLError(f"Invalid cursor: {cursor!r:.60}")
    return int(number)


def _dumps(obj: Any) -> bytes:
    """JSON text in which Decimals are written as numbers, digit for digit."""
    nonce = secrets.token_hex(6)
    raw: list[str] = []

    def convert(value: Any) -> Any:
        if isinstance(value, Decimal | float) and not math.isfinite(value):
            return str(value)  # only the admin dump meets these (GraphQL refuses them): text, not NaN
        if isinstance(value, Decimal):
            raw.append(str(value))
            return f"\x00{nonce}:{len(raw) - 1}\x00"
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return _iso(value)

    text = json.dumps(convert(obj), allow_nan=False)
    if raw:
        text = re.sub(rf'"\\u0000{nonce}:(\d+)\\u0000"', lambda m: raw[int(m.group(1))], text)
    return text.encode("utf-8")


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status=status, body=_dumps(obj),
                    headers={"Content-Type": "application/json;charset=UTF-8", **(headers or {})})


# Fields ion-api.md shows as verified in First Resonance's own samples (sections 4.4, 5, 6 and the
# example exchanges of section 9) that reference/ion-schema.graphql leaves out because ionqbo does not
# read them. The emulator serves them so the documented example queries run unchanged; the package's
# schema file stays byte-identical to the reference.
SCHEMA_EXTENSIONS = """
type Role { name: String }
type Reviewer { id: ID name: String roles: [Role!] }
type PurchaseOrderApproval { id: ID! reviewer: Reviewer }
type PurchaseOrderApprovalRequest { id: ID! reviewer: Reviewer }
type SupplierAttribute { key: String! value: String type: String }
extend type PurchaseOrder {
  approvals: [PurchaseOrderApproval!]!
  approvalRequests: [PurchaseOrderApprovalRequest!]!
}
extend type Part { quantity: Float }
extend type Supplier { Attributes: [SupplierAttribute!]! }
"""


# Directives a served SDL file may use to say how its fields map onto the emulator's store (which keeps
# records under the reference schema's names). They are not part of what introspection shows.
#   field: T @stored(as: "expenseCode")     resolve as the reference field `expenseCode` (dotted: a path)
#   enum value CANCELLED @stored(as: "CANCELED")  the stored value this enum value stands for
#   scalar DateTime @naiveTimes             times are served without a UTC offset (as UTC wall time)
# A field without @stored resolves as the reference field of the same name; an object-typed field
# whose stored value is a scalar is served as an object whose every field holds that value.
EMULATOR_DIRECTIVES = """
directive @stored(as: String!) on FIELD_DEFINITION | ENUM_VALUE
directive @naiveTimes on SCALAR
"""


@cache
def _schema_text() -> str:
    return SCHEMA_PATH.read_text(encoding="utf-8") + SCHEMA_EXTENSIONS


def schema_file_text(path: Path) -> str:
    """An SDL file to serve, with the emulator's directives declared."""
    text = path.read_text(encoding="utf-8")
    return text if "directive @stored" in text else EMULATOR_DIRECTIVES + text


class _IonExecutionContext(ExecutionContext):
    """Serialises leaves as ION does: integer ids stay JSON integers, Decimals stay exact."""

    @staticmethod
    def complete_leaf_value(return_type: GraphQLLeafType, result: Any) -> Any:
        name = getattr(return_type, "name", "")
        exact = isinstance(result, int | Decimal) and not isinstance(result, bool)
        if name == "ID" and exact and isinstance(result, int):
            return result  # ION emits ids as JSON integers (ion-api.md 3.5)
        if name == "Float" and exact:
            if isinstance(result, Decimal) and not result.is_finite():
                raise GraphQLError(f"Float cannot represent non numeric value: {result}")
            return result
        return ExecutionContext.complete_leaf_value(return_type, result)


# ---- filters and paging ---------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "neq": operator.ne, "gt": operator.gt, "gte": operator.ge,
    "lt": operator.lt, "lte": operator.le,
    "in": lambda value, args: value in args, "notIn": lambda value, args: value not in args,
}


def _as_id(value: Any) -> Any:
    return None if value is None else str(value)  # ids compare as text (ION ids are ID!)


def _as_is(value: Any) -> Any:
    return value


# filter field -> how the stored value and the argument are compared
_ID, _SAME, _TIME = _as_id, _as_is, _parse_time
_FILTER_FIELDS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "purchaseOrders": {"id": _ID, "status": _SAME, "supplierId": _ID, "updatedAt": _TIME},
    "parts": {"id": _ID, "partNumber": _SAME, "isLatestRevision": _SAME, "updatedAt": _TIME},
    "suppliers": {"id": _ID, "name": _SAME},
    "users": {"id": _ID, "email": _SAME},
    "purchaseOrderLines": {"id": _ID, "purchaseOrderId": _ID},
}


def _field_matches(value: Any, flt: Mapping[str, Any], norm: Callable[[Any], Any]) -> bool:
    """One field against its operators, with SQL's null rules (ION is SQLAlchemy on PostgreSQL)."""
    for op, arg in flt.items():
        if arg is None:  # an explicit null: eq -> IS NULL, neq -> IS NOT NULL, others ignored
            if (op == "eq" and value is not None) or (op == "neq" and value is None):
                return False
            continue
        have = norm(value)
        want = [norm(a) for a in arg] if op in ("in", "notIn") else norm(arg)
        if have is None or not _OPS[op](have, want):
            return False
    return True


def _select(records: list[dict[str, Any]], kind: str, filters: Mapping[str, Any] | None,
            sort: list[str | None] | None) -> list[dict[str, Any]]:
    fields = _FILTER_FIELDS.get(kind, {})
    wanted = (filters or {}).items()
    chosen = [r for r in records
              if all(_field_matches(r.get(name), flt or {}, fields.get(name, _SAME)) for name, flt in wanted)]
    chosen.sort(key=lambda r: _id_key(r.get("id")))  # the default order, and every tie-break
    for key in reversed([s for s in (sort or []) if s]):
        flat = key.replace("_", "").lower()
        descending = flat.endswith("desc")
        name = flat.removesuffix("desc").removesuffix("asc").removeprefix("asc")
        if name in ("updatedat", "createdat"):
            stamp = "updatedAt" if name == "updatedat" else "createdAt"

            def by_time(r: dict[str, Any], f: str = stamp) -> tuple[bool, datetime]:
                t = _parse_time(r.get(f))
                return t is not None, t or _EPOCH

            chosen.sort(key=by_time, reverse=descending)
        elif name == "id":
            chosen.sort(key=lambda r: _id_key(r.get("id")), reverse=descending)
    return chosen


def _connection(records: list[dict[str, Any]], first: int | None, after: str | None) -> dict[str, Any]:
    """A Relay connection over ``records`` with offset cursors and ION's totalCount/count.

    The real maximum page size is not documented (ion-api.md 3.1), so none is enforced. As in
    graphql-relay, hasPreviousPage is true only when paging backwards (``last``), which this schema
    does not offer: it is always false.
    """
    if first is not None and first < 0:
        raise GraphQLError("Argument 'first' must be a non-negative integer.")
    total = len(records)
    start = min(_cursor_index(after) + 1, total) if after is not None else 0
    end = total if first is None else min(start + first, total)
    edges = [{"cursor": _cursor(i), "node": records[i]} for i in range(start, end)]
    return {"edges": edges, "pageInfo": {
        "hasNextPage": end < total, "hasPreviousPage": False,
        "startCursor": edges[0]["cursor"] if edges else None,
        "endCursor": edges[-1]["cursor"] if edges else None,
        "totalCount": total, "count": len(edges),
    }}


# ---- the store --------------------------------------------------------------------------------


class IonStore:
    """ION's records in the load format, each with ``_etag``, ``createdAt`` and ``updatedAt``.

    Not thread-safe by itself: :class:`IonEmulator` guards it with a lock.
    """

    def __init__(self, clock: Callable[[], float], rng: random.Random) -> None:
        self._clock = clock
        self._rng = rng
        self._last_us = 0
        self.tables: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.organization: dict[str, Any] = {"id": 1, "domain": "example.com"}
        self.me: Any = None
        self.notifications: list[dict[str, Any]] = []
        self._uoms: dict[str, int] = {}

    def etag(self) -> str:
        """A new random etag (ION's format is not documented; any opaque text will do)."""
        return f"{self._rng.getrandbits(64):016x}"

    def stamp(self, previous: Any = None) -> str:
        """A write time: now, later than every earlier write and than ``previous`` by >= 1 µs."""
        micros = max(round(self._clock() * 1_000_000), self._last_us + 1)
        before = _parse_time(previous)
        if before is not None:
            micros = max(micros, (before - _EPOCH) // timedelta(microseconds=1) + 1)
        self._last_us = micros
        return (_EPOCH + timedelta(microseconds=micros)).isoformat(timespec="microseconds")

    def load(self, data: Mapping[str, Any]) -> None:
        """Replace every record with ``data`` (the load format)."""
        if not isinstance(data, Mapping):
            raise TypeError("load data must be an object")
        unknown = set(data) - {*KINDS, "organization", "me"}
        if unknown:
            raise ValueError(f"unknown load keys: {sorted(unknown)}")
        self.tables = {kind: {} for kind in KINDS}
        self.notifications = []
        self._uoms = {}
        self.organization = dict(data.get("organization") or {"id": 1, "domain": "example.com"})
        self.me = data.get("me")
        for kind in KINDS:
            for record in data.get(kind) or []:
                self.add(kind, record)

    def add(self, kind: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Insert a new record (an id is assigned when missing); returns the stored record."""
        if not isinstance(record, Mapping):
            raise TypeError(f"a {kind} record must be an object")
        rec = {k: _iso(v) for k, v in copy.deepcopy(dict(record)).items()}
        table = self.tables[kind]
        if rec.get("id") is None:
            rec["id"] = max((k[1] for k in map(_id_key, table) if k[0] == 0), default=0) + 1
        if str(rec["id"]) in table:
            raise ValueError(f"{kind} {rec['id']} exists already")
        if "updatedAt" not in rec:
            rec["updatedAt"] = rec.get("createdAt") or self.stamp()
        rec.setdefault("createdAt", rec["updatedAt"])
        rec.setdefault("_etag", self.etag())
        if kind == "purchaseOrders":
            for name in _CHILDREN:
                rec.setdefault(name, [])
                self._tag_children(rec[name], keep=True)
        table[str(rec["id"])] = rec
        return rec

    def _tag_children(self, children: Any, *, keep: bool) -> None:
        for child in children if isinstance(children, list) else []:
            if isinstance(child, dict) and (not keep or "_etag" not in child):
                child["_etag"] = self.etag()

    def get(self, kind: str, record_id: Any) -> dict[str, Any]:
        """The stored record; KeyError when there is none."""
        try:
            return self.tables[kind][str(record_id)]
        except KeyError:
            raise KeyError(f"no {kind} with id {record_id}") from None

    def find(self, kind: str, record_id: Any) -> dict[str, Any] | None:
        """The stored record or None (a dangling reference resolves to null)."""
        return None if record_id is None else self.tables[kind].get(str(record_id))

    def update(self, kind: str, record_id: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``changes``; a new _etag, and updatedAt moves forward unless given."""
        rec = self.get(kind, record_id)
        changes = {k: _iso(v) for k, v in copy.deepcopy(dict(changes)).items()}
        if "id" in changes and str(changes.pop("id")) != str(rec["id"]):
            raise ValueError("an id cannot be changed")
        changes.pop("_etag", None)
        if kind == "purchaseOrders":
            for name in _CHILDREN:
                if name in changes:
                    self._tag_children(changes[name], keep=False)
        rec.update(changes)
        self._touch(rec, given=changes.get("updatedAt"))
        return rec

    def update_child(self, po_id: Any, name: str, child_id: Any,
                     changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change one line or fee of a purchase order; the order's updatedAt and _etag move too."""
        po = self.get("purchaseOrders", po_id)
        children: list[Any] = po[name] if isinstance(po.get(name), list) else []
        child = next((c for c in children if isinstance(c, dict) and str(c.get("id")) == str(child_id)), None)
        if child is None:
            raise KeyError(f"purchase order {po_id} has no {name} entry with id {child_id}")
        changes = {k: _iso(v) for k, v in copy.deepcopy(dict(changes)).items() if k not in ("id", "_etag")}
        child.update(changes)
        child["_etag"] = self.etag()
        self._touch(po)
        return po

    def _touch(self, rec: dict[str, Any], given: Any = None) -> None:
        rec["_etag"] = self.etag()
        rec["updatedAt"] = given if given is not None else self.stamp(rec.get("updatedAt"))

    def uom(self, value: Any) -> Any:
        """Part.unitOfMeasure: stored as a name ("each"), served as a UnitOfMeasurement."""
        if not isinstance(value, str):
            return value
        uom_id = self._uoms.setdefault(value, len(self._uoms) + 1)
        return {"id": uom_id, "type": value}

    def dump(self) -> dict[str, Any]:
        """Every record in the load format, with _etag, createdAt and updatedAt."""
        data: dict[str, Any] = {kind: copy.deepcopy(list(self.tables[kind].values())) for kind in KINDS}
        data["organization"] = dict(self.organization)
        data["me"] = self.me
        return data


# ---- the emulator ------------------------------------------------------------------------------


class IonEmulator:
    """ION as an App (``Request -> Response``) for :class:`ionqbo.sandbox.httpd.Server`.

    Args:
        client_id: The API key's client id.
        client_secret: Its secret; random when None.
        token_lifetime: Seconds an access token lives (ION's real lifetime is not documented).
        clock: Seconds since the epoch; drives token expiry and ``updatedAt``.
        seed: Makes etags, message ids and faults replayable.
        schema_sdl: The SDL to serve instead of the reference schema (see :data:`EMULATOR_DIRECTIVES`
            for how its fields map onto the store); :func:`schema_file_text` reads a file.
    """

    def __init__(self, *, client_id: str = "ion-sandbox-client", client_secret: str | None = None,
                 token_lifetime: float = 300.0, clock: Callable[[], float] = time.time,
                 seed: int | None = None, schema_sdl: str | None = None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret if client_secret is not None else secrets.token_urlsafe(24)
        self.token_lifetime = token_lifetime
        self.clock = clock
        self.faults = Faults()
        if seed is not None:
            self.faults.configure(seed=seed)
        self.hook: Callable[[int], None] | None = None  # before_graphql(request_number), for tests
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._store = IonStore(clock, self._rng)
        self._tokens: dict[str, float] = {}
        self._counters: dict[str, Any] = {}
        self.reset_counters()
        self.schema_sdl = schema_sdl
        self.schema = self._build_schema()

    # ---- admin: Python API ----

    def load(self, data: Mapping[str, Any]) -> None:
        """Replace the store with ``data`` (the load format in the module docstring)."""
        with self._lock:
            self._store.load(data)

    def dump(self) -> dict[str, Any]:
        """The store in the load format, with _etag, createdAt and updatedAt."""
        with self._lock:
            return self._store.dump()

    def add_purchase_order(self, po: Mapping[str, Any]) -> dict[str, Any]:
        """Add a purchase order (with its lines and fees); returns it as stored."""
        return self._write(lambda s: s.add("purchaseOrders", po))

    def update_purchase_order(self, po_id: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change a purchase order; ``purchaseOrderLines`` / ``fees`` replace the lists."""
        return self._write(lambda s: s.update("purchaseOrders", po_id, changes))

    def update_line(self, po_id: Any, line_id: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change one line; returns the purchase order, whose updatedAt and _etag moved."""
        return self._write(lambda s: s.update_child(po_id, "purchaseOrderLines", line_id, changes))

    def update_fee(self, po_id: Any, fee_id: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change one fee; returns the purchase order, whose updatedAt and _etag moved."""
        return self._write(lambda s: s.update_child(po_id, "fees", fee_id, changes))

    def add_part(self, part: Mapping[str, Any]) -> dict[str, Any]:
        """Add a part; returns it as stored."""
        return self._write(lambda s: s.add("parts", part))

    def update_part(self, part_id: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change a part; returns it as stored."""
        return self._write(lambda s: s.update("parts", part_id, changes))

    def add_supplier(self, supplier: Mapping[str, Any]) -> dict[str, Any]:
        """Add a supplier; returns it as stored."""
        return self._write(lambda s: s.add("suppliers", supplier))

    def update_supplier(self, supplier_id: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change a supplier; returns it as stored."""
        return self._write(lambda s: s.update("suppliers", supplier_id, changes))

    def _write(self, change: Callable[[IonStore], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(change(self._store))

    @property
    def counters(self) -> dict[str, Any]:
        """Requests seen: ``{"total", "token", "graphql", "by_operation": {root field: n}}``."""
        with self._lock:
            return copy.deepcopy(self._counters)

    def reset_counters(self) -> None:
        """Set every counter to zero."""
        with self._lock:
            self._counters = {"total": 0, "token": 0, "graphql": 0, "by_operation": {}}

    @property
    def notifications(self) -> list[dict[str, Any]]:
        """Notifications sent with dispatchNotification, oldest first."""
        with self._lock:
            return copy.deepcopy(self._store.notifications)

    def expire_tokens(self) -> None:
        """Make every issued access token invalid (the next GraphQL call gets 401)."""
        with self._lock:
            self._tokens.clear()

    # ---- HTTP ----

    def __call__(self, request: Request) -> Response:
        """Answer one HTTP request."""
        path = request.path.rstrip("/") or "/"
        if path.startswith("/_admin/"):
            return self._admin(request, path)
        kind = "token" if path in TOKEN_PATHS else "graphql" if path == "/graphql" else None
        number = 0
        with self._lock:
            self._counters["total"] += 1
            if kind:
                self._counters[kind] += 1
                number = self._counters[kind]
        if kind is None:
            return _json(404, {"message": "Not Found"})
        delay = self.faults.latency
        fault = self.faults.draw(path)
        if fault and fault[0] == "drop":
            return Response(drop=True, delay=delay)
        if fault and fault[0] == "hang":
            return Response(hang=self.faults.hang())
        if fault and fault[0] == "status":
            response = _fault_response(fault[1])
        else:
            if fault:  # "slow"
                delay += self.faults.slow_seconds
            response = self._token(request) if kind == "token" else self._graphql(request, number)
        response.delay += delay
        return response

    def _token(self, request: Request) -> Response:
        if request.method != "POST":
            return _json(405, {"error": "invalid_request", "error_description": "HTTP method not allowed"})
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = request.header("authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                pair = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
            except (ValueError, binascii.Error, UnicodeError):
                pair = ""
            user, _, password = pair.partition(":")  # RFC 6749 2.3.1: form-encoded, then Basic
            client_id, client_secret = unquote_plus(user), unquote_plus(password)
        grant = form.get("grant_type")
        if not grant:
            return _json(400, {"error": "invalid_request",
                               "error_description": "Missing form parameter: grant_type"})
        if grant != "client_credentials":
            return _json(400, {"error": "unsupported_grant_type",
                               "error_description": "Unsupported grant_type"})
        if not (client_id == self.client_id and client_secret is not None
                and hmac.compare_digest(client_secret.encode(), self.client_secret.encode())):
            return _json(401, {"error": "unauthorized_client",
                               "error_description": "Invalid client or Invalid client credentials"})
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.token_lifetime
        return _json(200, {"access_token": token, "expires_in": int(self.token_lifetime),
                           "refresh_expires_in": 0, "token_type": "Bearer", "not-before-policy": 0,
                           "scope": "profile email"}, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _authorized(self, header: str | None) -> bool:
        words = (header or "").split()
        if len(words) == 2 and words[0].lower() in ("bearer", "token"):
            token = words[1]
        elif len(words) == 1:
            token = words[0]  # ION's own samples send the bare token (ion-api.md 1.3)
        else:
            return False
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and self.clock() < expiry

    def _graphql(self, request: Request, number: int) -> Response:
        if not self._authorized(request.header("authorization")):
            return _json(401, {"message": "Unauthorized"}, {"WWW-Authenticate": 'Bearer realm="api-keys"'})
        if request.method != "POST":
            return _json(405, {"errors": [{"message": "GraphQL requests must be POSTed."}]})
        try:
            payload = json.loads(request.body.decode("utf-8"))
        except (ValueError, UnicodeError):
            return _json(400, {"errors": [{"message": "POST body sent invalid JSON."}]})
        if self.hook is not None:
            self.hook(number)
        if isinstance(payload, list):
            if not payload:
                return _json(400, {"errors": [{"message": "Received an empty list in the batch request."}]})
            return _json(200, [self._execute(item)[1] for item in payload])
        status, result = self._execute(payload)
        return _json(status, result)

    def _execute(self, item: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(item, dict):
            return 400, {"errors": [{"message": "Request must be a JSON object."}]}
        query, variables, operation = item.get("query"), item.get("variables"), item.get("operationName")
        if isinstance(variables, str):
            try:
                variables = json.loads(variables)
            except ValueError:
                variables = []
        if not isinstance(query, str) or not query.strip():
            return 400, {"errors": [{"message": "Must provide query string."}]}
        if variables is not None and not isinstance(variables, dict):
            return 400, {"errors": [{"message": "Variables are invalid JSON."}]}
        if operation is not None and not isinstance(operation, str):
            return 400, {"errors": [{"message": "operationName must be a string."}]}
        with self._lock:  # one consistent snapshot per operation
            result = graphql_sync(self.schema, query, variable_values=variables, operation_name=operation,
                                  # graphql-core takes functions or objects with `resolve`, not methods
                                  middleware=[SimpleNamespace(resolve=self._count_root_field),
                                              SimpleNamespace(resolve=_as_object)],
                                  execution_context_class=_IonExecutionContext)
        return 200, dict(result.formatted)

    def _count_root_field(self, next_: Callable[..., Any], root: Any, info: GraphQLResolveInfo,
                          **args: Any) -> Any:
        if info.parent_type in (info.schema.query_type, info.schema.mutation_type):
            ops = self._counters["by_operation"]
            ops[info.field_name] = ops.get(info.field_name, 0) + 1
        return next_(root, info, **args)

    # ---- admin: HTTP ----

    def _admin(self, request: Request, path: str) -> Response:
        try:
            return self._admin_route(request, path)
        except KeyError as exc:
            return _json(404, {"error": str(exc.args[0]) if exc.args else "not found"})
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})

    def _admin_route(self, request: Request, path: str) -> Response:
        route = path.removeprefix("/_admin/")
        if request.method == "GET":
            views: dict[str, Callable[[], Any]] = {
                "dump": self.dump, "counters": lambda: self.counters,
                "notifications": lambda: self.notifications, "faults": self._fault_settings,
            }
            if route in views:
                return _json(200, views[route]())
            raise KeyError(f"no admin view {route}")
        if request.method != "POST":
            return _json(405, {"error": "use GET or POST"})
        actions: dict[str, Callable[[], Any]] = {
            "faults/clear": self.faults.clear, "counters/reset": self.reset_counters,
            "expire-tokens": self.expire_tokens,
        }
        if route in actions:
            actions[route]()
            return _json(200, {"ok": True})
        body = json.loads(request.body.decode("utf-8") or "{}", parse_float=Decimal)
        if route == "load":
            self.load(body)
            return _json(200, {"ok": True, **{k: len(v) for k, v in self.dump().items() if k in KINDS}})
        if route == "faults":
            self.faults.configure(**body)
            return _json(200, self._fault_settings())
        adds = {"purchase-orders": self.add_purchase_order, "parts": self.add_part,
                "suppliers": self.add_supplier}
        if route in adds:
            return _json(201, adds[route](body))
        match = re.fullmatch(r"purchase-orders/([^/]+)/(lines|fees)/([^/]+)", route)
        if match:
            update = self.update_line if match[2] == "lines" else self.update_fee
            return _json(200, update(match[1], match[3], body))
        match = re.fullmatch(r"(purchase-orders|parts|suppliers)/([^/]+)", route)
        if match:
            updates = {"purchase-orders": self.update_purchase_order, "parts": self.update_part,
                       "suppliers": self.update_supplier}
            return _json(200, updates[match[1]](match[2], body))
        raise KeyError(f"no admin action {route}")

    def _fault_settings(self) -> dict[str, Any]:
        f = self.faults
        return {"error_rate": f.error_rate, "statuses": list(f.statuses), "drop_rate": f.drop_rate,
                "slow_rate": f.slow_rate, "slow_seconds": f.slow_seconds, "latency": f.latency,
                "hang_rate": f.hang_rate, "only_paths": list(f.only_paths),
                "fail_next": list(f.fail_next), "injected": dict(f.injected)}

    # ---- GraphQL ----

    def _build_schema(self) -> GraphQLSchema:
        schema = build_schema(self.schema_sdl if self.schema_sdl is not None else _schema_text())
        store = self._store
        date_time = schema.type_map.get("DateTime")
        if date_time is not None:
            date_time.parse_value = _parse_datetime_input  # type: ignore[attr-defined]
            if _has_directive(date_time, "naiveTimes"):
                date_time.serialize = _naive_time  # type: ignore[attr-defined]

        def ref(kind: str, key: str) -> Callable[..., Any]:
            return lambda obj, _info: store.find(kind, obj.get(key))

        def lines(po: dict[str, Any], _info: GraphQLResolveInfo) -> Any:
            found = po.get("purchaseOrderLines")
            if not isinstance(found, list):
                return found
            return [dict(line, _po=po) if isinstance(line, dict) else line for line in found]

        resolvers: dict[str, dict[str, Callable[..., Any]]] = {
            "Query": {
                "me": lambda _root, _info: store.find("users", store.me)
                or next(iter(store.tables["users"].values()), None),
                "purchaseOrders": self._lister("purchaseOrders"),
                "purchaseOrder": lambda _root, _info, id: store.find("purchaseOrders", id),
                "parts": self._lister("parts"),
                "part": lambda _root, _info, id: store.find("parts", id),
                "suppliers": self._lister("suppliers"),
                "users": self._lister("users"),
                "purchaseOrderLines": self._lister("purchaseOrderLines"),
                "purchaseOrderLine": lambda _root, _info, id: next(
                    (line for line in self._all_lines() if str(line.get("id")) == str(id)), None),
            },
            "Mutation": {"dispatchNotification": self._dispatch_notification},
            "User": {"organization": lambda _user, _info: store.organization},
            "PurchaseOrder": {"supplier": ref("suppliers", "supplierId"),
                              "currency": ref("currencies", "currencyId"), "purchaseOrderLines": lines,
                              "approvals": lambda po, _info: po.get("approvals") or [],
                              "approvalRequests": lambda po, _info: po.get("approvalRequests") or []},
            "Supplier": {"Attributes": lambda supplier, _info: supplier.get("Attributes") or []},
            "PurchaseOrderLine": {"part": ref("parts", "partId"),
                                  "purchaseOrder": lambda line, _info: line.get("_po"),
                                  "purchaseOrderId": lambda line, _info: (line.get("_po") or {}).get("id")},
            "Part": {"unitOfMeasure": lambda part, _info: store.uom(part.get("unitOfMeasure")),
                     "quantity": lambda part, _info: part.get("quantity", 0)},
        }
        for type_name, gtype in schema.type_map.items():
            if type_name.startswith("__"):
                continue
            if isinstance(gtype, GraphQLEnumType):
                for value in gtype.values.values():
                    stored = _directive_arg(value, "stored")
                    if stored is not None:
                        value.value = stored
                continue
            if not isinstance(gtype, GraphQLObjectType):
                continue
            canonical = resolvers.get(type_name, {})
            for field_name, fld in gtype.fields.items():
                stored = _directive_arg(fld, "stored")
                if stored is not None:
                    fld.resolve = _stored_resolver(stored.split("."), canonical)
                elif field_name in canonical:  # a test may serve a schema without the extensions
                    fld.resolve = canonical[field_name]
        return schema

    def _all_lines(self) -> list[dict[str, Any]]:
        out = []
        for po in self._store.tables["purchaseOrders"].values():
            for line in po.get("purchaseOrderLines") or []:
                if isinstance(line, dict):
                    out.append(dict(line, _po=po, purchaseOrderId=po.get("id")))
        return out

    def _lister(self, kind: str) -> Callable[..., dict[str, Any]]:
        def resolve(_root: Any, _info: GraphQLResolveInfo, filters: Mapping[str, Any] | None = None,
                    sort: list[str | None] | None = None, first: int | None = None,
                    after: str | None = None) -> dict[str, Any]:
            table = self._all_lines() if kind == "purchaseOrderLines" else list(self._store.tables[kind].values())
            records = _select(table, kind, filters, sort)
            return _connection(records, first, after)
        return resolve

    def _dispatch_notification(self, _root: Any, _info: GraphQLResolveInfo,
                               input: dict[str, Any]) -> dict[str, Any]:
        if self._store.find("users", input["userId"]) is None:
            raise GraphQLError(f"User with id {input['userId']} does not exist.")
        message_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        sent_at = datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="microseconds")
        self._store.notifications.append({"messageId": message_id, **input, "sentAt": sent_at})
        return {"response": {"messageId": message_id}}


def _directive_arg(element: Any, name: str) -> str | None:
    """The ``as`` argument of directive ``@name`` on an SDL element, or None."""
    node = getattr(element, "ast_node", None)
    for directive in getattr(node, "directives", None) or ():
        if directive.name.value == name:
            for arg in directive.arguments:
                if arg.name.value == "as":
                    return str(getattr(arg.value, "value", ""))
    return None


def _has_directive(element: Any, name: str) -> bool:
    node = getattr(element, "ast_node", None)
    return any(d.name.value == name for d in getattr(node, "directives", None) or ())


def _stored_resolver(path: list[str], canonical: Mapping[str, Callable[..., Any]]) -> Callable[..., Any]:
    """Resolve as the reference field ``path[0]`` would, then follow the rest of the path."""
    def resolve(obj: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
        first = canonical.get(path[0])
        value = first(obj, info) if first is not None else (obj.get(path[0]) if isinstance(obj, dict) else None)
        for step in path[1:]:
            value = value.get(step) if isinstance(value, dict) else None
        return value
    return resolve


def _as_object(next_: Callable[..., Any], root: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
    """A scalar stored where the served schema has an object: every field of the object holds it."""
    result = next_(root, info, **args)
    if not isinstance(result, str | int | float | Decimal) or info.parent_type.name.startswith("__"):
        return result
    gtype = info.return_type
    while isinstance(gtype, GraphQLNonNull):
        gtype = gtype.of_type
    if isinstance(gtype, GraphQLObjectType):
        return {name: result for name in gtype.fields}
    return result


def _naive_time(value: Any) -> Any:
    """DateTime served without an offset (UTC wall time), for schemas marked @naiveTimes."""
    parsed = _parse_time(value)
    return parsed.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") if parsed else value


def _fault_response(status: int) -> Response:
    """An injected failure, shaped like what a client would meet in front of ION."""
    if status in (502, 504):  # a gateway or load balancer answers, not ION: an HTML page
        title = "502 Bad Gateway" if status == 502 else "504 Gateway Time-out"
        html = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
                f"<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n")
        return text_response(status, html, "text/html")
    headers = {"Retry-After": "1"} if status in (429, 503) else {}
    message = {429: "Too Many Requests", 503: "Service Unavailable"}.get(status, "Error")
    return _json(status, {"message": message}, headers)
