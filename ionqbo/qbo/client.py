"""The QBO Accounting API v3 client: query, read, create, update, batch, preferences, CDC.

Every request carries ``minorversion=75`` (Intuit ignores lower values since August 2025 and no
higher one is documented, qbo-api.md section 1) and ``Accept: application/json``. Requests are paced
by :class:`~ionqbo.qbo.limiter.RateLimiter` and retried as follows:

- reads and queries: on connection errors, timeouts, 429, 5xx and throttle faults;
- writes (create, update, batch): only when they carry a ``requestid`` (the same one on every try,
  R6), because QBO then replays the first answer instead of writing twice (qbo-api.md section 11).
  A write without one is retried only when QBO certainly did not act on it (401, 429, a throttle
  fault, a connection that was never made); any other failure raises
  :class:`~ionqbo.qbo.models.WriteOutcomeUnknownError` and the caller looks the record up first.

A 401 triggers one access-token refresh and one more try; a second 401 is QboAuthenticationError
(exit 4, run ``ionqbo connect``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote as urlquote

import requests

from ionqbo.clock import SkewWatch
from ionqbo.config import Settings
from ionqbo.errors import ApiError, PaginationLoopError, RetriableApiError
from ionqbo.http import RETRY_EXCEPTIONS, Attempts, Breaker, RetryPolicy, make_session, redact, retry_after
from ionqbo.qbo.auth import QboAuth
from ionqbo.qbo.limiter import RateLimiter
from ionqbo.qbo.models import (
    BatchItem,
    BatchResult,
    QboAuthenticationError,
    QboFault,
    ThrottleError,
    WriteOutcomeUnknownError,
    find_fault,
    make_fault,
    parse_batch_item,
    parse_fault,
    parse_fault_object,
    query_rows,
)

log = logging.getLogger("ionqbo.qbo")

MINOR_VERSION = "75"
MAX_RESULTS = 1000  # QBO's maximum MAXRESULTS (qbo-api.md section 6)
MAX_BATCH_ITEMS = 30  # per BatchItemRequest (qbo-api.md section 7; over it QBO answers 1040)
MAX_REQUEST_ID = 50  # requestid length limit (qbo-api.md section 11)
MAX_BATCH_REQUEST_ID = 36  # ... for a batch request
MAX_BATCH_ID_WITH_REQUEST_ID = 10  # each bId, when the batch carries a requestid
# 500: "Resubmit the request once" (qbo-api.md section 9); 502/504: gateway failures.
_SERVER_ERRORS = frozenset({500, 502, 504})
_ENTITY = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def quote(value: str) -> str:
    r"""A QBO query string literal: ``'...'`` with ``\`` and then ``'`` escaped by a backslash.

    QBO documents the backslash escape for apostrophes (``'Adam\'s Candy Shop'``, qbo-api.md section 6);
    a backslash in the value is itself escaped first, so that ``a\`` cannot swallow the closing quote.
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _entity_name(entity: str) -> str:
    if not _ENTITY.match(entity):
        msg = f"not a QBO entity name: {entity!r}"
        raise ValueError(msg)
    return entity


def _check_request_id(request_id: str | None, limit: int) -> None:
    if request_id is None:
        return
    if not request_id or len(request_id) > limit or not request_id.isprintable() or " " in request_id:
        msg = f"requestid must be 1 to {limit} printable characters without spaces, got {request_id!r}"
        raise ValueError(msg)


def _never_sent(exc: BaseException) -> bool:
    """True when the connection was never made, so the server cannot have seen the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return type(reason).__name__ in ("NewConnectionError", "NameResolutionError")
    return False


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    msg = f"cannot send {type(value).__name__} to QBO"
    raise TypeError(msg)


class QboClient:
    """A client for one QBO company (the realm the token store is connected to).

    Args:
        settings: base URL, retries, throttle wait, timeout.
        auth: hands out access tokens; its ``realm_id`` is the company.
        session: HTTP session (one is made if omitted).
        sleep: waits between retries and for pacing (injectable).
        clock: monotonic seconds for pacing (injectable).
        policy: retry policy (built from the settings when omitted).
        limiter: client-side pacing (built with ``clock`` and ``sleep`` when omitted).
    """

    def __init__(
        self,
        settings: Settings,
        auth: QboAuth,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        policy: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.session = session or make_session(timeout=settings.http_timeout, name="qbo", bounded=True)
        self.sleep = sleep
        self.policy = policy or RetryPolicy(tries=settings.max_retries, throttle_wait=settings.throttle_wait,
                                            sleep=sleep, clock=clock)
        # Shared with the token refresh: once either gives up, nothing more goes to QBO this run.
        breaker = getattr(auth, "breaker", None)
        self.breaker: Breaker = breaker if isinstance(breaker, Breaker) else Breaker("QBO")
        self.server_date: str | None = None  # QBO's Date header, last seen
        self.skew = SkewWatch("QBO")  # how far this machine's clock is from QBO's
        self.last_time: datetime | None = None  # QBO's own time of its last answer
        self.limiter = limiter or RateLimiter(clock=clock, sleep=sleep)
        self.counts: dict[str, int] = {}
        self.request_count = 0
        self._base: str | None = None

    @property
    def base_url(self) -> str:
        """``{QBO_BASE_URL}/v3/company/{realm}``."""
        if self._base is None:
            realm = urlquote(self.auth.realm_id, safe="")
            self._base = f"{self.settings.qbo_base_url.rstrip('/')}/v3/company/{realm}"
        return self._base

    # ---- the one request loop ----------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        write: bool = False,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Send one logical request (with retries) and return the decoded JSON body."""
        url = f"{self.base_url}/{path}"
        query = {**(params or {}), "minorversion": MINOR_VERSION}
        if request_id is not None:
            query["requestid"] = request_id
        safe = not write or request_id is not None  # may be resent after it reached QBO
        what = f"QBO {kind} {method} /{path.split('?')[0]}"
        refreshed = False
        tries = self.policy.budget()
        self.breaker.check()  # QBO already gave up on an earlier request of this run
        while True:
            self.limiter.acquire(kind)
            token = self.auth.access_token()
            headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
            if content_type:
                headers["Content-Type"] = content_type
            self.request_count += 1
            self.counts[kind] = self.counts.get(kind, 0) + 1
            attempt = tries.begin()
            try:
                response = self.session.request(method, url, params=query, data=body, headers=headers)
            except RETRY_EXCEPTIONS as exc:
                reason = f"{type(exc).__name__}: {redact(str(exc))[:200]}"
                if not safe and not _never_sent(exc):
                    msg = (f"{what} failed ({reason}) after it may have reached QBO; it carries no "
                           "requestid, so it is not resent")
                    raise WriteOutcomeUnknownError(msg) from None
                wait = self.policy.backoff(attempt)
                if not tries.allows(wait):
                    raise self.breaker.trip(what, reason, tries=attempt, seconds=tries.elapsed(),
                                            unreachable=True) from None
                self._wait(what, attempt, wait, reason)
                continue

            status = response.status_code
            tid = response.headers.get("intuit_tid")
            self._note_clock(response)
            if status == 401:
                if refreshed:
                    rejected = parse_fault(status, response.content, response.headers.get("Content-Type", ""),
                                           tid=tid) or make_fault([], status=401, tid=tid)
                    self._log_error(what, rejected)
                    msg = f"QBO rejected a freshly refreshed access token: {rejected.message}"
                    raise QboAuthenticationError(msg, status=401, errors=rejected.errors, tid=tid,
                                                 hint="run `ionqbo connect` to authorize ionqbo again")
                log.info("%s: 401, refreshing the access token once (intuit_tid=%s)", what, tid)
                self.auth.force_refresh(token)
                refreshed = True
                tries.count -= 1  # a 401 is not a failed try: QBO did not act on the request
                continue

            decoded, fault, bad_body = self._decode(response)
            if fault is None and not bad_body:
                self._note_time(decoded)
                return decoded
            if fault is not None:
                self._log_error(what, fault)
                if isinstance(fault, ThrottleError) or status == 429:
                    # Only throttling waits the 60 s Intuit asks for. QBO did not act on a throttled
                    # request (429/3001): resending is safe even for a write without requestid.
                    after = retry_after(response)
                    wait = self.settings.throttle_wait if after is None else after
                    if not tries.allows(wait, throttled=True):
                        raise self._gave_up(what, fault, tries, f"throttled (HTTP {status}, code {fault.code})")
                    self._wait(what, attempt, wait, f"throttled (HTTP {status}, code {fault.code})")
                    continue
                if status in _SERVER_ERRORS or (fault.retryable and status >= 500):
                    # A server error (503 included) waits a short, jittered, growing time; Retry-After
                    # is honoured. It may come after the write was done, so it follows the write rule.
                    limit = 2 if status == 500 else None  # 500: "resubmit the request once"
                    if not safe:
                        raise self._unknown(what, fault)
                    wait = self.policy.backoff(attempt, response)
                    if not tries.allows(wait, tries=limit):
                        raise self._gave_up(what, fault, tries, f"HTTP {status}")
                    self._wait(what, attempt, wait, f"HTTP {status}")
                    continue
                raise fault
            # 2xx with a body that is not JSON, or cut short.
            msg = f"QBO answered {what} with HTTP {status} and a body that is not complete JSON"
            if not safe:
                raise WriteOutcomeUnknownError(msg + "; the write may have been done", status=status, tid=tid)
            wait = self.policy.backoff(attempt)
            if not tries.allows(wait):
                raise RetriableApiError(msg, status=status, tid=tid)
            self._wait(what, attempt, wait, "unreadable body")

    def _gave_up(self, what: str, fault: QboFault, tries: Attempts, reason: str) -> QboFault:
        """QBO stayed unavailable for one request: nothing more goes to QBO in this run."""
        detail = " ".join(fault.message.split())
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        self.breaker.trip(what, detail if str(fault.status) in detail else f"{reason}: {detail}",
                          tries=tries.count, seconds=tries.elapsed(),
                          status=fault.status, tid=fault.tid, code=fault.code)
        return fault

    def _note_clock(self, response: requests.Response) -> None:
        """Keep QBO's own time (its Date header) for the clock check."""
        date = response.headers.get("Date")
        if date:
            self.server_date = date
            self.skew.note(date)

    def _note_time(self, decoded: dict[str, Any]) -> None:
        """QBO's own time of the answer (the ``time`` every answer carries): CDC's next changedSince."""
        raw = decoded.get("time")
        when: datetime | None = None
        if isinstance(raw, str):
            try:
                when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                when = None
        elif isinstance(raw, int | float | Decimal) and not isinstance(raw, bool):
            when = datetime.fromtimestamp(float(raw) / 1000, tz=UTC)  # the gateway's epoch milliseconds
        if when is not None and when.tzinfo is not None:
            self.last_time = when

    @staticmethod
    def _decode(response: requests.Response) -> tuple[dict[str, Any], QboFault | None, bool]:
        """(decoded JSON, fault or None, body unreadable)."""
        status = response.status_code
        ctype = response.headers.get("Content-Type", "")
        tid = response.headers.get("intuit_tid")
        raw = response.content
        if status >= 400:
            fault = parse_fault(status, raw, ctype, tid=tid)
            return {}, fault or make_fault([], status=status, tid=tid), False
        try:
            decoded = json.loads(raw.decode("utf-8"), parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            # A 200 whose body is XML may still be a Fault (throttling arrives as XML).
            fault = parse_fault(status, raw, ctype, tid=tid)
            return {}, fault, fault is None
        if not isinstance(decoded, dict):
            return {}, None, True
        found, obj = find_fault(decoded)
        if found:  # HTTP 200 may still carry a Fault (qbo-api.md section 9)
            return {}, parse_fault_object(obj, status=status, tid=tid), False
        return decoded, None, False

    def _unknown(self, what: str, fault: QboFault) -> WriteOutcomeUnknownError:
        msg = (f"{what}: {fault.message}; the write carries no requestid and may have been done, "
               "so it is not resent")
        return WriteOutcomeUnknownError(msg, status=fault.status, code=fault.code, tid=fault.tid)

    def _wait(self, what: str, attempt: int, wait: float, reason: str) -> None:
        log.warning("%s failed (%s); try %d of %d in %.1fs", what, reason, attempt + 1, self.policy.tries,
                    wait)
        self.sleep(wait)

    @staticmethod
    def _log_error(what: str, fault: QboFault) -> None:
        log.warning("%s: %s (intuit_tid=%s)", what, fault.message, fault.tid or "-")

    # ---- operations ---------------------------------------------------------------------------

    def query(self, statement: str) -> list[dict[str, Any]]:
        """Run one query statement (one page) and return its rows.

        Values inside ``statement`` must already be escaped with :func:`quote`.
        """
        body = self._request("POST", "query", kind="query", body=statement.encode("utf-8"),
                             content_type="application/text")
        match = re.search(r"\bfrom\s+([A-Za-z]+)", statement, re.IGNORECASE)
        return query_rows(body.get("QueryResponse"), match.group(1) if match else None)

    def query_all(
        self, entity: str, where: str = "", order_by: str = "", *, page_size: int = MAX_RESULTS
    ) -> Iterator[dict[str, Any]]:
        """Every row of ``select * from entity [where ...] [orderby ...]``, paged with STARTPOSITION.

        Args:
            entity: the entity name (``Item``).
            where: the condition, values escaped with :func:`quote`.
            order_by: e.g. ``Id``; pass a stable order when the result may change while it is read.
            page_size: rows per page, at most 1000.
        """
        entity = _entity_name(entity)
        if not 1 <= page_size <= MAX_RESULTS:
            msg = f"page_size must be 1..{MAX_RESULTS}"
            raise ValueError(msg)
        base = f"select * from {entity}"  # noqa: S608 - a QBO query: entity checked, values quote()d
        if where:
            base += f" where {where}"
        if order_by:
            base += f" orderby {order_by}"
        start = 1
        previous_first: Any = None
        while True:
            rows = self.query(f"{base} startposition {start} maxresults {page_size}")
            if rows and start > 1 and rows[0].get("Id") is not None and rows[0].get("Id") == previous_first:
                msg = f"QBO returned the same page twice for {entity} at position {start}"
                raise PaginationLoopError(msg)
            yield from rows
            if len(rows) < page_size:
                return
            previous_first = rows[0].get("Id")
            start += page_size

    def read(self, entity: str, entity_id: str) -> dict[str, Any]:
        """Read one entity by Id (``GET /{entity}/{id}``)."""
        name = _entity_name(entity)
        body = self._request("GET", f"{name.lower()}/{urlquote(str(entity_id), safe='')}", kind="read")
        return self._entity(body, name)

    def create(
        self, entity: str, body: dict[str, Any], *, request_id: str, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Create an entity. ``request_id`` (at most 50 characters) makes the create safe to resend."""
        name = _entity_name(entity)
        _check_request_id(request_id, MAX_REQUEST_ID)
        answer = self._request("POST", name.lower(), kind="create", params=params, body=self._json(body),
                               content_type="application/json", write=True, request_id=request_id)
        return self._entity(answer, name)

    def update(
        self,
        entity: str,
        body: dict[str, Any],
        *,
        sparse: bool = False,
        request_id: str | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Full (default) or sparse update; ``body`` must hold ``Id`` and the latest ``SyncToken``.

        A full update sets every writable field left out of ``body`` to null (qbo-api.md section 3).

        Raises:
            StaleObjectError: the SyncToken is not the latest (5010): read again, re-diff, retry.
        """
        name = _entity_name(entity)
        _check_request_id(request_id, MAX_REQUEST_ID)
        if body.get("Id") in (None, "") or body.get("SyncToken") in (None, ""):  # "0" is a valid SyncToken
            msg = f"an update of {name} needs Id and SyncToken"
            raise ValueError(msg)
        payload = {**body, "sparse": bool(sparse)}
        answer = self._request("POST", name.lower(), kind="update", params=params, body=self._json(payload),
                               content_type="application/json", write=True, request_id=request_id)
        return self._entity(answer, name)

    def batch(self, items: list[BatchItem], *, request_id: str | None = None) -> list[BatchResult]:
        """Send up to 30 operations in one request; each item's Fault is parsed on its own.

        Returns:
            One result per item, in the order of ``items``.
        """
        if not items:
            return []
        if len(items) > MAX_BATCH_ITEMS:
            msg = f"a batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}"
            raise ValueError(msg)
        _check_request_id(request_id, MAX_BATCH_REQUEST_ID)
        bids = [item.bid for item in items]
        if len(set(bids)) != len(bids) or not all(bids):
            msg = "batch item ids must be unique and not empty"
            raise ValueError(msg)
        if request_id is not None and any(len(b) > MAX_BATCH_ID_WITH_REQUEST_ID for b in bids):
            msg = f"with a requestid, batch item ids have at most {MAX_BATCH_ID_WITH_REQUEST_ID} characters"
            raise ValueError(msg)
        payload = {"BatchItemRequest": [item.to_json() for item in items]}
        answer = self._request("POST", "batch", kind="batch", body=self._json(payload),
                               content_type="application/json", write=True, request_id=request_id)
        responses = answer.get("BatchItemResponse")
        if not isinstance(responses, list):
            msg = "QBO answered a batch without BatchItemResponse"
            raise ApiError(msg)
        by_bid: dict[str, BatchResult] = {}
        hints = {item.bid: self._query_entity(item) for item in items}
        for entry in responses:
            if isinstance(entry, dict):
                result = parse_batch_item(entry, hints.get(str(entry.get("bId", ""))))
                by_bid[result.bid] = result
        results = []
        for item in items:
            result = by_bid.get(item.bid) or BatchResult(
                bid=item.bid,
                fault=QboFault(f"QBO returned no result for batch item {item.bid}", code="missing",
                               retryable=True),
            )
            if result.fault is not None:
                self._log_error(f"QBO batch item {item.bid}", result.fault)
            results.append(result)
        return results

    def preferences(self) -> dict[str, Any]:
        """The company's Preferences (purchase orders, inventory, multicurrency, class tracking)."""
        return self._entity(self._request("GET", "preferences", kind="preferences"), "Preferences")

    def company_info(self) -> dict[str, Any]:
        """The CompanyInfo of the connected company."""
        realm = urlquote(self.auth.realm_id, safe="")
        return self._entity(self._request("GET", f"companyinfo/{realm}", kind="companyinfo"), "CompanyInfo")

    def cdc(self, entities: Sequence[str], changed_since: datetime) -> dict[str, list[dict[str, Any]]]:
        """Entities changed since ``changed_since`` (at most 30 days back; deleted ones carry ``status``).

        Returns:
            Entity name -> changed objects (every requested name present, possibly empty).
        """
        if changed_since.tzinfo is None:
            msg = "changed_since must be timezone-aware"
            raise ValueError(msg)
        names = [_entity_name(e) for e in entities]
        params = {"entities": ",".join(names), "changedSince": changed_since.isoformat(timespec="seconds")}
        body = self._request("GET", "cdc", kind="cdc", params=params)
        out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        lower = {name.lower(): name for name in names}
        for block in body.get("CDCResponse") or []:
            for qr in (block.get("QueryResponse") or []) if isinstance(block, dict) else []:
                if not isinstance(qr, dict):
                    continue
                for key, value in qr.items():
                    if isinstance(value, list) and key.lower() in lower:
                        out[lower[key.lower()]].extend(v for v in value if isinstance(v, dict))
        return out

    # ---- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _json(payload: Any) -> bytes:
        return json.dumps(payload, default=_json_default, ensure_ascii=False).encode("utf-8")

    @staticmethod
    def _query_entity(item: BatchItem) -> str | None:
        if item.operation == "query" and isinstance(item.body, str):
            match = re.search(r"\bfrom\s+([A-Za-z]+)", item.body, re.IGNORECASE)
            return match.group(1) if match else None
        return None

    @staticmethod
    def _entity(body: dict[str, Any], name: str) -> dict[str, Any]:
        for key, value in body.items():
            if key.lower() == name.lower() and isinstance(value, dict):
                return value
        msg = f"QBO's answer has no {name} object (keys: {', '.join(sorted(body)) or 'none'})"
        raise ApiError(msg)
