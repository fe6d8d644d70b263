"""QBO faults as typed errors, and the batch request/response records.

A QBO error arrives in one of three shapes (docs/reference/qbo.md sections 9 and 10): the documented JSON
``{"Fault": {"Error": [...], "type": ...}}``, the gateway's lowercase ``{"fault": {"error": [...]}}``
envelope (401/403), and XML ``<IntuitResponse><Fault><Error code=...>`` (429 throttling, even when
JSON was asked for). :func:`parse_fault` reads all three, and anything else (HTML, empty) becomes a
fault chosen by the HTTP status. Each fault class says whether retrying can help (``retryable``) and
whether it concerns one record only (``record_level``: the sync parks that record and goes on).
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from ionqbo.errors import ApiError, AuthError, BadResponseError, ExitCode, RetriableApiError
from ionqbo.http import redact

log = logging.getLogger("ionqbo.qbo")

# Bodies longer than this are not parsed as XML or JSON faults (a fault is a few hundred bytes).
_MAX_FAULT_BODY = 1_000_000


@dataclass(frozen=True)
class FaultError:
    """One ``Error`` entry of a QBO Fault: ``code`` is a string (e.g. ``"6240"``)."""

    code: str
    message: str = ""
    detail: str = ""
    element: str = ""

    def describe(self) -> str:
        """``6240 Duplicate Name Exists Error: The name supplied ... (element Name)``."""
        text = f"{self.code} {self.message}".strip()
        if self.detail and self.detail != self.message:
            text += f": {' '.join(self.detail.split())}"
        if self.element:
            text += f" (element {self.element})"
        return text


class QboFault(ApiError):
    """QBO answered with a Fault (or an error status); ``errors`` holds every Error entry."""

    retryable: bool = False
    record_level: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: list[FaultError] | None = None,
        fault_type: str = "",
        tid: str | None = None,
        hint: str | None = None,
        retryable: bool | None = None,
        code: str | None = None,
    ) -> None:
        self.errors: list[FaultError] = list(errors or [])
        first = self.errors[0] if self.errors else None
        if code is None:
            code = first.code if first else (str(status) if status else None)
        super().__init__(
            message,
            status=status,
            code=code,
            detail=first.detail if first else None,
            tid=tid,
            hint=hint,
        )
        self.fault_type = fault_type
        if retryable is not None:
            self.retryable = retryable
        elif status is not None and status >= 500:
            self.retryable = True

    @property
    def codes(self) -> list[str]:
        """The code of every Error entry, in order."""
        return [e.code for e in self.errors]


class ValidationFault(QboFault):
    """QBO refused this record (2xxx, 5010, 6xxx, 610); fix the record or its mapping."""

    record_level = True
    exit_code = ExitCode.PARTIAL


class BusinessValidationError(ValidationFault):
    """A business rule or request validation failed (6000 and other 2xxx/6xxx codes)."""


class StaleObjectError(ValidationFault):
    """The SyncToken sent is not the latest (5010); read the object again, re-diff, retry."""


class DuplicateDocNumberError(ValidationFault):
    """The DocNumber is already used by another transaction (6140)."""


class DuplicateNameError(ValidationFault):
    """The name is already used (6240); vendor, customer and employee names share one namespace."""


class InvalidReferenceError(ValidationFault):
    """A reference (vendor, item, account, class) does not exist or is inactive (2500)."""


class ObjectNotFoundError(ValidationFault):
    """The object, or something it refers to, does not exist or was made inactive (610)."""


class AmountMismatchError(ValidationFault):
    """A line's Amount is not Qty x UnitPrice (6070)."""


class QueryParseError(QboFault):
    """QBO could not parse or run a query (4000-4002): a bug in the query text."""

    exit_code = ExitCode.BUG


class QboAuthenticationError(QboFault, AuthError):
    """QBO rejected the access token (3200, 401) even after a refresh; run `ionqbo connect`."""

    exit_code = ExitCode.AUTH


class QboAuthorizationError(QboFault, AuthError):
    """The connection lacks permission for this company or scope (3100, 403)."""

    exit_code = ExitCode.AUTH


class ThrottleError(QboFault, RetriableApiError):
    """QBO throttled the request (3001, 429); wait (Intuit says 60 s) and retry."""

    retryable = True


class SystemFaultError(QboFault, RetriableApiError):
    """QBO failed on its side (10000, 5xx); retry later."""

    retryable = True


class WriteOutcomeUnknownError(RetriableApiError):
    """A write without a requestid failed after it may have reached QBO; look it up before retrying."""


# Exact codes first; then ranges (see :func:`fault_class`). docs/reference/qbo.md section 9.
_BY_CODE: dict[str, type[QboFault]] = {
    "5010": StaleObjectError,
    "6140": DuplicateDocNumberError,
    "6240": DuplicateNameError,
    "2500": InvalidReferenceError,
    "610": ObjectNotFoundError,
    "6070": AmountMismatchError,
    "6000": BusinessValidationError,
    "3200": QboAuthenticationError,
    "100": QboAuthenticationError,  # General Authentication Error
    "110": QboAuthenticationError,  # Authentication OAuth Error
    "3100": QboAuthorizationError,
    "120": QboAuthorizationError,  # Authorization Failure (e.g. the connecting user lost access)
    "3001": ThrottleError,
    "10000": SystemFaultError,
}

_HINTS: dict[type[QboFault], str] = {
    QboAuthenticationError: "run `ionqbo connect` to authorize ionqbo again",
    QboAuthorizationError: (
        "check that QBO_ENVIRONMENT matches the company (sandbox companies need the sandbox host) and that "
        "the connecting user still has access; then run `ionqbo connect`"
    ),
    ThrottleError: "QBO allows 500 requests/min and 10/s per company; another app may share the budget",
}


def fault_class(code: str | None, status: int | None) -> type[QboFault]:
    """The fault class for a QBO error code, falling back to the HTTP status.

    Args:
        code: the Error ``code`` (a string of digits), or None.
        status: the HTTP status, or None (batch items have none).
    """
    if code:
        digits = code.lstrip("0") or "0"
        if digits in _BY_CODE:
            return _BY_CODE[digits]
        if digits.isdigit():
            number = int(digits)
            if 4000 <= number <= 4002:
                return QueryParseError
            if 2000 <= number < 3000 or 6000 <= number < 7000:
                return BusinessValidationError
    if status == 401:
        return QboAuthenticationError
    if status == 403:
        return QboAuthorizationError
    if status == 429:
        return ThrottleError
    if status is not None and status >= 500:
        return SystemFaultError
    return QboFault


def make_fault(
    errors: list[FaultError],
    *,
    status: int | None,
    fault_type: str = "",
    tid: str | None = None,
) -> QboFault:
    """Build the typed fault for parsed Error entries (the first entry decides the class)."""
    first = errors[0] if errors else None
    cls = fault_class(first.code if first else None, status)
    if first is not None:
        text = "; ".join(e.describe() for e in errors)
    else:
        text = f"HTTP {status}" if status else "unknown error"
    prefix = f"QBO {fault_type or 'fault'}" + (f" (HTTP {status})" if status else "")
    message = redact(f"{prefix}: {text}")
    return cls(message, status=status, errors=errors, fault_type=fault_type, tid=tid, hint=_HINTS.get(cls))


def parse_fault_object(fault: Any, *, status: int | None = None, tid: str | None = None) -> QboFault | None:
    """A fault from an already-decoded ``Fault``/``fault`` object (a batch item's, for instance)."""
    if not isinstance(fault, dict):
        return None
    raw = fault.get("Error", fault.get("error"))
    if isinstance(raw, dict):
        raw = [raw]
    errors = []
    for entry in raw if isinstance(raw, list) else []:
        if isinstance(entry, dict):
            errors.append(_fault_error(entry))
    return make_fault(errors, status=status, fault_type=str(fault.get("type") or ""), tid=tid)


def _fault_error(entry: dict[str, Any]) -> FaultError:
    def text(*names: str) -> str:
        for name in names:
            value = entry.get(name)
            if value is not None:
                return str(value)
        return ""

    code = text("code", "Code")
    if not code:  # "message=AuthenticationFailed; errorCode=003200; statusCode=401"
        match = re.search(r"errorCode=0*(\d+)", text("message", "Message"))
        code = match.group(1) if match else ""
    return FaultError(code=code, message=text("Message", "message"), detail=text("Detail", "detail"),
                      element=text("element", "Element"))


def find_fault(body: Any) -> tuple[bool, Any]:
    """(found, Fault object) in a decoded body: top level, lowercase gateway envelope, or in QueryResponse."""
    if not isinstance(body, dict):
        return False, None
    for key in ("Fault", "fault"):
        if isinstance(body.get(key), dict):
            return True, body[key]
    query = body.get("QueryResponse")
    if isinstance(query, dict) and isinstance(query.get("Fault"), dict):
        return True, query["Fault"]
    return False, None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml_fault(text: str, status: int, tid: str | None) -> QboFault | None:
    # The body comes from QBO over TLS; ElementTree does not resolve external entities and the
    # expat shipped with Python 3.11 limits entity expansion, so a hostile body cannot do harm.
    try:
        root = ET.fromstring(text)  # noqa: S314
    except ET.ParseError:
        return None
    fault = root if _local(root.tag) == "Fault" else next(
        (el for el in root.iter() if _local(el.tag) == "Fault"), None)
    if fault is None:
        return None
    errors = []
    for el in fault:
        if _local(el.tag) != "Error":
            continue
        parts = {_local(child.tag): (child.text or "").strip() for child in el}
        code = el.get("code") or ""
        if not code:
            match = re.search(r"errorCode=0*(\d+)", parts.get("Message", ""))
            code = match.group(1) if match else ""
        errors.append(FaultError(code=code, message=parts.get("Message", ""), detail=parts.get("Detail", ""),
                                 element=el.get("element") or parts.get("element", "")))
    return make_fault(errors, status=status, fault_type=fault.get("type") or "", tid=tid)


def parse_fault(
    status: int, body: bytes | str, content_type: str = "", *, tid: str | None = None
) -> QboFault | None:
    """Parse a QBO error response into a typed fault.

    Args:
        status: the HTTP status.
        body: the raw body.
        content_type: the Content-Type header (``application/json``, ``application/xml``, ``text/html``...).
        tid: the ``intuit_tid`` response header, kept on the error for support requests.

    Returns:
        The fault; None when the status is a success and the body holds no Fault.
    """
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    stripped = text.strip()
    fault: QboFault | None = None
    if stripped and len(stripped) <= _MAX_FAULT_BODY:
        ctype = content_type.lower()
        if stripped.startswith("<") and "html" not in ctype and not stripped[:15].lower().startswith(
                ("<!doctype html", "<html")):
            fault = _parse_xml_fault(stripped, status, tid)
        elif stripped.startswith("{"):
            try:
                decoded = json.loads(stripped)
            except ValueError:
                decoded = None
            found, obj = find_fault(decoded)
            if found:
                fault = parse_fault_object(obj, status=status, tid=tid)
    if fault is None and status >= 400:
        snippet = redact(" ".join(stripped.split())[:200])
        fault = make_fault([], status=status, tid=tid)
        if snippet:
            fault.message = f"{fault.message}: {snippet}"
            fault.args = (fault.message,)
    return fault


# ---- batch ---------------------------------------------------------------------------------

BATCH_OPERATIONS = frozenset({"create", "update", "delete", "query"})


@dataclass
class BatchItem:
    """One operation of a batch request.

    Args:
        bid: the batch item id (unique in the request; at most 10 characters when the batch carries a
            requestid, docs/reference/qbo.md section 11).
        operation: ``create``, ``update``, ``delete`` or ``query``.
        entity: the entity name (``PurchaseOrder``); ignored for a query.
        body: the entity JSON, or the query statement for a query.
    """

    bid: str
    operation: str
    entity: str
    body: dict[str, Any] | str

    def to_json(self) -> dict[str, Any]:
        """The ``BatchItemRequest`` entry for this item."""
        if self.operation not in BATCH_OPERATIONS:
            msg = f"batch item {self.bid!r}: unknown operation {self.operation!r}"
            raise ValueError(msg)
        if self.operation == "query":
            if not isinstance(self.body, str):
                msg = f"batch item {self.bid!r}: a query's body is the statement"
                raise TypeError(msg)
            return {"bId": self.bid, "Query": self.body}
        if not isinstance(self.body, dict):
            msg = f"batch item {self.bid!r}: a {self.operation}'s body is the entity JSON"
            raise TypeError(msg)
        return {"bId": self.bid, "operation": self.operation, self.entity: self.body}


@dataclass
class BatchResult:
    """The outcome of one batch item: the entity, the query rows, or the item's own fault."""

    bid: str
    entity: dict[str, Any] | None = None
    fault: QboFault | None = None
    rows: list[dict[str, Any]] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when the item succeeded."""
        return self.fault is None


_QUERY_META = frozenset({"startPosition", "maxResults", "totalCount", "Fault"})


def query_rows(query_response: Any, entity: str | None = None) -> list[dict[str, Any]]:
    """The entity list of a ``QueryResponse`` (empty when QBO sent ``{}``)."""
    if not isinstance(query_response, dict):
        return []
    if entity:
        for key, value in query_response.items():
            if key.lower() == entity.lower() and isinstance(value, list):
                return [row for row in value if isinstance(row, dict)]
            if key.lower() == entity.lower():
                # QBO sends a list (or no key when nothing matched); reading anything else as "no rows"
                # would make every vendor look missing, or create a PO that exists.
                msg = f"QBO answered a {entity} query with QueryResponse.{key} of type {type(value).__name__}"
                raise BadResponseError(msg)
    for key, value in query_response.items():
        if key not in _QUERY_META and isinstance(value, list):
            return [row for row in value if isinstance(row, dict)]
    return []


def parse_batch_item(item: dict[str, Any], entity_hint: str | None = None) -> BatchResult:
    """One ``BatchItemResponse`` entry -> :class:`BatchResult` (its Fault parsed on its own)."""
    bid = str(item.get("bId", ""))
    if "Fault" in item:
        fault = parse_fault_object(item["Fault"]) or make_fault([], status=None)
        return BatchResult(bid=bid, fault=fault, raw=item)
    if "QueryResponse" in item:
        return BatchResult(bid=bid, rows=query_rows(item["QueryResponse"], entity_hint), raw=item)
    entity = None
    for key, value in item.items():
        if key not in ("bId", "time") and isinstance(value, dict):
            entity = value
            break
    return BatchResult(bid=bid, entity=entity, raw=item)
