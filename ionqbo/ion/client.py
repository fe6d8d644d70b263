"""The ION client: client-credentials auth, GraphQL over HTTP with retries, and paging that never skips.

Incremental reads (``changed_purchase_orders``, ``changed_parts``) do not page with ION's offset
cursors. ION's cursors are offsets into the filtered, sorted list (``arrayconnection:<n>``): when a
record is updated while the pages are read it moves to the end of the ``updatedAt`` order and every
record behind it shifts one place forward, so the record at the page boundary would be skipped.
Instead every page is a fresh query from the top of ``updatedAt >= T`` (keyset paging), where ``T`` is
the ``updatedAt`` of the last record of the previous page; the records at exactly ``T`` that were
already yielded are dropped by ``(id, updatedAt)``. When more records share one ``updatedAt`` than a
page holds, that group is read with ``updatedAt == T`` and ``id notIn [ids already read]`` (always
from the top again), and the read continues with ``updatedAt > T``.

Consequences, both harmless because the sync is idempotent: a record updated during the read can be
yielded twice (its old and its new version, in that order); and a record whose status leaves the
requested statuses during the read is not yielded (it no longer qualifies).

Errors: an ``errors`` array fails the call, except on the record reads, where an error whose
``path`` points into one node (``[root, "edges", i, "node", ...]``: ION nulled one field of one
record) turns that node into an ``InvalidRecord`` naming the field, and the rest of the page is
used. A record that cannot be read never stops the run; an error ION cannot pin on a record does.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeVar

import requests
from graphql import (
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    build_client_schema,
    parse,
)

from ionqbo.clock import SkewWatch
from ionqbo.config import Settings
from ionqbo.errors import (
    BadResponseError,
    FatalApiError,
    IonAuthError,
    IonGraphQLError,
    MalformedRecordError,
    PaginationLoopError,
    RetriableApiError,
    UnavailableError,
)
from ionqbo.http import (
    RETRY_EXCEPTIONS,
    RETRY_STATUSES,
    Breaker,
    RetryPolicy,
    describe,
    excerpt,
    make_session,
    redact,
    send_with_retry,
)
from ionqbo.ion import queries
from ionqbo.ion.models import (
    InvalidRecord,
    Part,
    PurchaseOrder,
    node_id,
    parse_part,
    parse_purchase_order,
    read_time,
)
from ionqbo.ion.schema import (
    IonSchemaError,
    ListRead,
    Plan,
    SchemaCache,
    reference_schema,
    schema_sha256,
)

log = logging.getLogger("ionqbo.ion")

# ion-api.md 1.2: the token lifetime is NOT FOUND ("short-lived"). Honour `expires_in` when the token
# endpoint sends it; when it does not, assume 300 s (Keycloak's default access-token lifespan), the
# safe side: a token that lives longer is merely fetched again early.
DEFAULT_TOKEN_LIFETIME = 300.0
# Fetch a new token this long before the old one expires (halved for very short lifetimes, so that a
# 60 s token is not refetched before every request).
TOKEN_MARGIN = 60.0

# Ids per `id: {in: [...]}` request: keeps the request body small (ION's limits are not published).
ID_CHUNK = 100

AUTH_HINT = (
    "check ION_CLIENT_ID and ION_CLIENT_SECRET, and that ION_ENVIRONMENT (or ION_TOKEN_URL / ION_API_URL) "
    "is the ION environment the API key was made in: an ION API key works in one environment only"
)
PERMISSION_HINT = (
    "the API key has the permissions of the ION user who made it; give that user the permission, "
    "or make the key with a user who has it"
)
SCHEMA_HINT = (
    "ION's schema differs from what ionqbo expects; run `ionqbo check-mappings` to list the differences"
)

_SCHEMA_MESSAGE = re.compile(r"Cannot query field|Unknown argument|Unknown type|is not defined by type|"
                             r"used in position expecting")
_PERMISSION_MESSAGE = re.compile(r"(?i)permission|not authori[sz]ed|forbidden")

_NOT_RETRIED = "(not retried: a mutation may have reached ION)"

T = TypeVar("T")


@dataclass(frozen=True)
class _Node:
    """One raw node of a page and the GraphQL errors whose path points into it."""

    node: Any
    errors: list[dict[str, Any]] = field(default_factory=list)


class IonClient:
    """Reads ION purchase orders, parts and users over GraphQL; sends the odd notification.

    Args:
        settings: ION URLs, API key, page size, retry and timeout settings.
        session: a ``requests.Session`` (default: :func:`ionqbo.http.make_session`).
        policy: the retry policy (default: ``settings.max_retries`` tries); inject ``sleep`` in tests.
        clock: monotonic seconds, for the token's expiry.
        schema: the ION schema to build queries for (default: introspect ION, see :meth:`plan`).
        schema_cache: where introspection answers are kept between runs (default: none).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session: requests.Session | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        schema: GraphQLSchema | None = None,
        schema_cache: SchemaCache | None = None,
    ) -> None:
        self._settings = settings
        self._schema = schema
        self._cache = schema_cache
        self._plan: Plan | None = None
        self._docs: queries.Documents | None = None
        self._plan_source = ""
        self._known: Callable[[str, str], str | None] | None = None
        self._noted: set[str] = set()
        self._session = session if session is not None else make_session(
            timeout=settings.http_timeout, name="ion", bounded=True)
        self._policy = policy if policy is not None else RetryPolicy(
            tries=settings.max_retries, throttle_wait=settings.throttle_wait)
        self._clock = clock
        self.breaker = Breaker("ION")  # once a request gives up, nothing more goes to ION in this run
        self.server_date: str | None = None  # ION's Date header, last seen
        self.skew = SkewWatch("ION")  # how far this machine's clock is from ION's
        self._page_size = settings.page_size
        self._token: str | None = None
        self._token_expires = 0.0
        self.request_count = 0
        self.token_count = 0  # token requests among `request_count`
        redact.add(settings.ion_client_secret)

    # ---- auth ------------------------------------------------------------------------------

    def _access_token(self) -> str:
        if self._token is None or self._clock() >= self._token_expires:
            self._fetch_token()
        assert self._token is not None
        return self._token

    def _fetch_token(self) -> None:
        self._token = None
        form = {
            "grant_type": "client_credentials",
            "client_id": self._settings.ion_client_id,
            "client_secret": self._settings.ion_client_secret,
        }
        url = self._settings.ion_token_url

        def send() -> requests.Response:
            self.request_count += 1
            self.token_count += 1
            return self._session.post(url, data=form, headers={"Accept": "application/json"})

        started = self._clock()
        resp = self._send(send, what="ION token request", retry=True)
        if resp.status_code in (400, 401):
            # Keycloak answers a wrong id or secret with 400/401 {"error": "unauthorized_client"}.
            raise IonAuthError(f"ION refused the API key: {describe(resp)}", hint=AUTH_HINT)
        self._raise_for_status(resp, what="ION token request", retried=True)
        body = self._json(resp, what="ION token request")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise BadResponseError(f"ION token response has no access_token: {describe(resp)}",
                                   status=resp.status_code, hint=f"check ION_TOKEN_URL ({url})")
        redact.add(token)
        expires_in = body.get("expires_in")
        if isinstance(expires_in, int | float | Decimal | str) and not isinstance(expires_in, bool):
            try:
                lifetime = float(expires_in)
            except ValueError:
                lifetime = DEFAULT_TOKEN_LIFETIME
        else:
            lifetime = DEFAULT_TOKEN_LIFETIME
        if not lifetime > 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        self._token = token
        self._token_expires = started + lifetime - min(TOKEN_MARGIN, lifetime / 2)
        log.debug("ION token fetched; valid for %.0f s", lifetime)

    # ---- transport ----------------------------------------------------------------------------

    def _send(self, send: Callable[[], requests.Response], *, what: str, retry: bool) -> requests.Response:
        """One request with the retry policy (or a single try); transport failures become ApiErrors.

        Once a request has used up its tries for availability reasons (a connection error, a timeout,
        429 or 5xx), the breaker trips: every later request of the run fails at once (exit 5).
        """
        self.breaker.check()
        policy = self._policy if retry else replace(self._policy, tries=1)
        tries = policy.budget()
        try:
            resp = send_with_retry(send, policy, what=what, attempts=tries)
        except RETRY_EXCEPTIONS as exc:
            reason = f"{type(exc).__name__}: {redact(str(exc))[:200]}"
            if not retry:
                raise UnavailableError(f"{what}: ION unreachable {_NOT_RETRIED}: {reason}",
                                       hint="nothing to do if it passes; if it lasts, check the network and ION's status") from None
            raise self.breaker.trip(what, reason, tries=tries.count, seconds=tries.elapsed(),
                                        unreachable=True) from None
        except requests.RequestException as exc:
            msg = f"{what}: request could not be sent: {type(exc).__name__}: {redact(str(exc))[:200]}"
            raise FatalApiError(msg, hint="check ION_API_URL and ION_TOKEN_URL") from None
        date = resp.headers.get("Date")
        if date:
            self.server_date = date
            self.skew.note(date)
        if retry and resp.status_code in RETRY_STATUSES:
            raise self.breaker.trip(what, describe(resp), tries=tries.count, seconds=tries.elapsed(),
                                    status=resp.status_code, tid=resp.headers.get("x-b3-trace-id"))
        return resp

    def _raise_for_status(self, resp: requests.Response, *, what: str, retried: bool) -> None:
        status = resp.status_code
        tid = resp.headers.get("x-b3-trace-id")
        if status == 200:
            return
        if status in RETRY_STATUSES:
            tries = f"after {self._policy.tries} tries" if retried else _NOT_RETRIED
            raise UnavailableError(f"{what} failed {tries}: {describe(resp)}", status=status, tid=tid,
                                   hint="nothing to do if it passes; if it lasts, check ION's status")
        if status == 403:
            raise IonAuthError(f"{what} forbidden: {describe(resp)}", hint=PERMISSION_HINT)
        if status >= 500:
            raise RetriableApiError(f"{what} failed: {describe(resp)}", status=status, tid=tid,
                                    hint="an ION server error: nothing to do if it passes; if it lasts, report it to First "
                                         "Resonance with the trace id")
        raise FatalApiError(f"{what} failed: {describe(resp)}", status=status, tid=tid)

    @staticmethod
    def _json(resp: requests.Response, *, what: str) -> Any:
        try:
            return json.loads(resp.content, parse_float=Decimal)
        except ValueError:
            kind = resp.headers.get("Content-Type", "no content type")
            raise BadResponseError(
                f"{what}: ION answered {resp.status_code} with a body that is not JSON ({kind}): "
                f"{excerpt(resp)}",
                status=resp.status_code, tid=resp.headers.get("x-b3-trace-id"),
                # (not "the token endpoint": redaction reads "token <word>" as a credential)
                hint="check that ION_API_URL is the GraphQL endpoint (…/graphql) and ION_TOKEN_URL the "
                     "URL that issues access tokens; a proxy or login page may be answering instead",
            ) from None

    # ---- GraphQL -----------------------------------------------------------------------------

    def execute(self, query: str, variables: dict[str, Any] | None = None, *,
                allow_partial: bool = False) -> dict[str, Any]:
        """Run one GraphQL operation and return its ``data``.

        Queries are retried on connection errors, timeouts, 429, 502, 503 and 504; a mutation is sent
        once (it may have reached ION). A 401 fetches a new token once.

        Args:
            query: a document from :mod:`ionqbo.ion.queries` (values never go into the text).
            variables: every value the operation needs.
            allow_partial: return ``data`` when ION also sent ``errors`` (logged as a warning). Off by
                default: a record with a field nulled by an error would be synced wrong. (The record
                reads handle partial pages themselves: a node an error points into becomes an
                InvalidRecord, the rest of the page goes on.)

        Returns:
            The ``data`` object of the answer.

        Raises:
            IonAuthError: the API key is refused (even after a fresh token), or lacks a permission.
            IonGraphQLError: ION answered with an ``errors`` array.
            UnavailableError: ION stayed unavailable after every try.
            FatalApiError: the answer is not JSON or not a GraphQL answer.
        """
        data, errors = self._execute(query, variables)
        if errors and not allow_partial:
            self._raise_errors(errors, what=f"ION {_operation(query)[0]}", partial=True)
        return data

    def _execute(self, query: str, variables: dict[str, Any] | None) -> tuple[dict[str, Any], list[Any]]:
        """Send one operation; (data, errors). Raises for everything but errors that came with data."""
        name, is_mutation = _operation(query)
        what = f"ION {name}"
        payload = json.dumps({"query": query, "variables": variables or {}, "operationName": name},
                             default=_json_default).encode("utf-8")
        url = self._settings.ion_api_url
        refreshed = False
        while True:
            token = self._access_token()

            def send(token: str = token) -> requests.Response:
                self.request_count += 1
                return self._session.post(url, data=payload, headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                })

            resp = self._send(send, what=what, retry=not is_mutation)
            if resp.status_code != 401:
                break
            if refreshed:
                msg = f"{what}: ION refused a freshly issued token: {describe(resp)}"
                raise IonAuthError(msg, hint=AUTH_HINT)
            log.info("%s: ION answered 401; fetching a new token", what)
            refreshed = True
            self._token = None
        return self._graphql_data(resp, what=what, retried=not is_mutation)

    def _graphql_data(self, resp: requests.Response, *, what: str,
                      retried: bool) -> tuple[dict[str, Any], list[Any]]:
        if resp.status_code in (400, 422):
            # graphene answers a document that fails validation with 400 and an `errors` array.
            try:
                body = json.loads(resp.content, parse_float=Decimal)
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("errors"):
                self._raise_errors(body["errors"], what=what)
        self._raise_for_status(resp, what=what, retried=retried)
        body = self._json(resp, what=what)
        if not isinstance(body, dict):
            raise BadResponseError(f"{what}: ION's answer is not a GraphQL response object: {excerpt(resp)}",
                                   status=resp.status_code,
                                   hint="check that ION_API_URL is the GraphQL endpoint")
        data = body.get("data")
        errors = body.get("errors") or []
        if errors:
            if not isinstance(data, dict) or all(value is None for value in data.values()):
                self._raise_errors(errors, what=what)
            log.warning("%s: ION sent data and errors: %s", what, _error_text(errors))
        if not isinstance(data, dict):
            raise BadResponseError(f"{what}: ION's answer has no data object: {excerpt(resp)}",
                                   status=resp.status_code)
        return data, errors if isinstance(errors, list) else [errors]

    @staticmethod
    def _raise_errors(errors: Any, *, what: str, partial: bool = False) -> None:
        text = _error_text(errors)
        prefix = "answered with partial data and errors" if partial else "was rejected"
        items = errors if isinstance(errors, list) else [errors]
        error = IonGraphQLError(f"{what} {prefix}: {text}", errors=items)
        if _SCHEMA_MESSAGE.search(text):
            error.hint = SCHEMA_HINT
        elif _PERMISSION_MESSAGE.search(text):
            error.hint = PERMISSION_HINT
        raise error

    # ---- the live schema -----------------------------------------------------------------------

    def plan(self) -> Plan:
        """What this ION's schema lets ionqbo read, and how (introspected once, cached in the state dir).

        Introspection refused: the bundled reference schema is assumed, and said so in the notes.

        Raises:
            ConfigError: an ``[ion_fields]`` override is wrong (names the field and the type searched).
        """
        if self._plan is None:
            self._load_plan(refresh=False)
        assert self._plan is not None
        return self._plan

    def prepare(self) -> Plan:
        """:meth:`plan`, and stop when a required field is missing (before any write).

        Raises:
            IonSchemaError: one message per missing required thing: the ION type, the closest names,
                the setting that maps it.
        """
        plan = self.plan()
        blocking = [f"{m.message()}; fix: {m.fix()}" for m in plan.blocking] + list(plan.problems)
        if blocking:
            raise IonSchemaError(blocking)
        for note in self.schema_notes():
            if note not in self._noted:
                self._noted.add(note)
                log.warning("%s", note)
        return plan

    def schema_notes(self) -> list[str]:
        """What this run cannot read or send, and how it reads (warnings: named once per run)."""
        plan = self.plan()
        notes = [f"{m.message()}: it is not sent to QBO; to read it, {m.fix()}" for m in plan.optional_missing]
        return notes + list(plan.notes)

    def _load_plan(self, *, refresh: bool) -> None:
        from ionqbo.ion.schema import read_overrides, resolve

        source = "given"
        schema = self._schema if not refresh else None
        notes: list[str] = []
        digest = ""
        if schema is None:
            data = None
            now = datetime.now(UTC)
            if self._cache is not None and not refresh:
                data = self._cache.load(self._settings.ion_api_url, now)
                source = "cache"
            if data is None:
                source = "introspection"
                try:
                    data = self.execute(queries.INTROSPECTION)
                except IonGraphQLError as exc:
                    data = None
                    notes.append(f"ION refused the introspection query ({exc.message[:200]}); ionqbo assumes "
                                 "its reference schema, which may not fit this ION")
                if data is not None and self._cache is not None:
                    digest = self._cache.store(self._settings.ion_api_url, data, now)
            if data is not None:
                try:
                    schema = build_client_schema(data)  # type: ignore[arg-type]
                except (TypeError, ValueError, KeyError, GraphQLError) as exc:
                    raise BadResponseError(f"ION's introspection answer cannot be read: {exc}",
                                           hint="report this to First Resonance support") from None
                digest = digest or schema_sha256(data)
            else:
                schema = reference_schema()
                source = "reference"
        overrides = read_overrides(self._settings.mappings_file)
        plan = resolve(schema, overrides=overrides, statuses=self._settings.po_statuses)
        plan.notes.extend(notes)
        plan.schema_hash = digest
        docs = queries.build(plan)
        invalid = queries.validate_documents(schema, docs, records_only=True)
        plan.problems.extend(f"ionqbo built a query ION's schema does not accept: {p}" for p in invalid)
        self._plan, self._docs, self._plan_source = plan, docs, source
        log.debug("ION schema from %s (%s); purchase orders: %s, parts: %s", source, digest[:12] or "-",
                  plan.po.strategy if plan.po else "-", plan.part.strategy if plan.part else "-")

    def _documents(self) -> queries.Documents:
        self.plan()
        assert self._docs is not None
        return self._docs

    def save_schema(self, path: str) -> int:
        """Write the live schema (types and fields, no data) as SDL to ``path``; returns its size."""
        from ionqbo.ion.schema import sdl

        text = sdl(self.plan().schema)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return len(text)

    def set_known_etags(self, known: Callable[[str, str], str | None] | None) -> None:
        """``known(kind, id)``: the ION ``_etag`` last synced (for reads that compare etags), or None."""
        self._known = known

    # ---- paging ------------------------------------------------------------------------------

    def _run_doc(self, name: str, variables: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """Run a built document; a rejection of a document built from a cached schema re-reads the schema once."""
        text = self._documents()[name]
        try:
            return self._execute(text, variables)
        except IonGraphQLError as exc:
            if self._plan_source != "cache" or not _SCHEMA_MESSAGE.search(exc.message):
                raise
            log.info("ION rejected a query built from the cached schema; reading the schema again")
            self._load_plan(refresh=True)
            if name not in self._documents():
                raise
            return self._execute(self._documents()[name], variables)

    def _page(self, name: str, variables: dict[str, Any]) -> tuple[list[_Node], bool, str | None]:
        """One page of a connection: (canonical nodes with the errors that point into each, hasNextPage, endCursor).

        An error whose path points into one node (``[root, "edges", i, "node", ...]``) spoils that node
        only: it becomes an InvalidRecord and the rest of the page is used. Any other error raises.
        """
        docs = self._documents()
        root = docs.roots[name]
        role = docs.roles.get(name, "")
        variables = self._variables(name, variables)
        try:
            data, errors = self._run_doc(name, variables)
        except IonGraphQLError as exc:
            spoiled = _node_errors(exc.errors, root)
            if spoiled is None or name not in docs.keys:
                raise
            return self._page_around(name, variables, spoiled)
        per_node: dict[int, list[dict[str, Any]]] = {}
        for error in errors:
            path = error.get("path") if isinstance(error, dict) else None
            if (isinstance(path, list) and len(path) >= 4 and path[0] == root and path[1] == "edges"
                    and isinstance(path[2], int) and path[3] == "node"):
                per_node.setdefault(path[2], []).append(error)
            else:
                self._raise_errors(errors, what=f"ION {name}", partial=True)
        nodes, has_next, end = _connection(data, root, name)
        if role == "po" and name not in docs.keys.values():
            self._attach_lines(nodes)
        plan = self.plan()
        return [_Node(plan.canonical(role, node) if role else node, per_node.get(i, []))
                for i, node in enumerate(nodes)], has_next, end

    def _variables(self, name: str, variables: dict[str, Any]) -> dict[str, Any]:
        """Only the arguments the live root field has (``sort`` may be absent; ``first`` too)."""
        docs = self._documents()
        text = docs[name]
        out = {k: v for k, v in variables.items() if f"${k}:" in text}
        if "sort" in variables and "$sort:" not in text:
            out.pop("sort", None)
        return out

    def _attach_lines(self, nodes: list[Any]) -> None:
        """Lines only under the root ``purchaseOrderLines``: read them for this page's orders."""
        plan = self.plan()
        lr = plan.lines_root
        if lr is None:
            return
        by_po: dict[str, list[Any]] = {}
        ids = [node_id(n) for n in nodes if node_id(n)]
        if not ids:
            return
        groups = [ids] if lr.op == "in" else [[i] for i in ids]
        for group in groups:
            value: Any = group if lr.op == "in" else group[0]
            for page in self._pages("PurchaseOrderLines", {"filters": {lr.filter_field: {lr.op: value}}}):
                for item in page:
                    raw = item.node
                    link = raw
                    for step in lr.po_link:
                        link = link.get(step) if isinstance(link, dict) else None
                    if link is not None:
                        by_po.setdefault(str(link), []).append(raw)
        for node in nodes:
            if isinstance(node, dict):
                node["__lines__"] = sorted(by_po.get(node_id(node), []), key=lambda n: _id_order(node_id(n)))

    def _page_around(self, name: str, variables: dict[str, Any], spoiled: dict[int, list[dict[str, Any]]]
                     ) -> tuple[list[_Node], bool, str | None]:
        """The page ION nulled whole because some records hold a value GraphQL cannot return.

        A NaN or a null in a non-null field nulls its parents up to the connection, so one bad record
        would hide the page, every run. The same page is read again with keys only (id, updatedAt):
        the records the errors point at become InvalidRecords naming the field, and the others are
        read in full by id (each round sets at least one record aside, so this ends).
        """
        docs = self._documents()
        keys_name = docs.keys[name]
        data, _errors = self._run_doc(keys_name, self._variables(keys_name, variables))
        raw_keys, has_next, end = _connection(data, docs.roots[keys_name], keys_name)
        plan = self.plan()
        keys = [plan.canonical(docs.roles[keys_name], k) for k in raw_keys]
        bad = {node_id(keys[i]): errs for i, errs in spoiled.items() if i < len(keys)}
        wanted = [node_id(k) for k in keys if node_id(k) not in bad]
        full: dict[str, _Node] = {}
        if wanted:
            # The same query by id; should it meet more spoiled records, it is set aside the same way.
            by_id = {**variables, "filters": {"id": {"in": wanted}}, "first": len(wanted), "after": None}
            read = plan.po if docs.roles[name] == "po" else plan.part
            by_id["sort"] = [read.sort_id] if read is not None and read.sort_id else None
            nodes, _more, _end = self._page(name, by_id)
            full = {node_id(item.node): item for item in nodes}
        out = []
        for key in keys:
            ion_id = node_id(key)
            if ion_id in bad:
                out.append(_Node(key, bad[ion_id]))
            elif ion_id in full:
                out.append(full[ion_id])
        log.warning("ION %s: %d record(s) could not be read and were set aside: %s", name, len(bad),
                    ", ".join(sorted(bad)))
        return out, has_next, end

    def _pages(self, name: str, variables: dict[str, Any]) -> Iterator[list[_Node]]:
        """Relay paging with ``after`` cursors: one list of nodes per page (for non-moving reads)."""
        after: str | None = None
        seen: set[str] = set()
        pages = "$after:" in self._documents()[name]
        while True:
            nodes, has_next, end = self._page(name, {**variables, "first": self._page_size, "after": after})
            yield nodes
            if not has_next:
                return
            if not pages:
                msg = f"ION {name}: ION says more records follow but its query has no `after` argument"
                raise PaginationLoopError(msg, hint="report this to First Resonance support")
            if not end or end in seen:
                msg = f"ION {name}: page cursor {end!r} was returned before; paging would never end"
                raise PaginationLoopError(msg, hint="report this to First Resonance support")
            seen.add(end)
            after = end

    def _read_for(self, name: str) -> ListRead:
        plan = self.plan()
        read = plan.po if self._documents().roles[name] == "po" else plan.part
        if read is None:
            raise IonSchemaError([f"ION has no {name} query"])
        return read

    def _changed(self, name: str, filters: dict[str, Any], since: datetime | None, kind: str) -> Iterator[_Node]:
        """Changed records: keyset paging where the schema allows it, else an _etag scan."""
        read = self._read_for(name)
        if since is not None and since.tzinfo is None:
            msg = "since must be a timezone-aware datetime"
            raise ValueError(msg)
        if read.keyset:
            yield from self._keyset(name, filters, since, read.sort_updated or "")
        else:
            yield from self._scan(name, filters, kind, read)

    def _scan(self, name: str, filters: dict[str, Any], kind: str, read: ListRead) -> Iterator[_Node]:
        """Every record in scope by key (id, _etag); only those whose _etag differs from the last sync in full.

        Pages are read sorted by id where ION can sort by id (a record's place does not move when it is
        updated); the full reads go by id. A record deleted during the scan may shift a later one past
        a page boundary: it is found by the next run's scan.
        """
        keys_name = self._documents().keys[name]
        known = self._known
        changed: list[str] = []
        total = 0
        for page in self._pages(keys_name, {"filters": filters, "sort": [read.sort_id] if read.sort_id else None}):
            for item in page:
                ion_id = node_id(item.node)
                if not ion_id:
                    continue
                total += 1
                etag = item.node.get("_etag") if isinstance(item.node, dict) else None
                if known is not None and isinstance(etag, str) and etag and known(kind, ion_id) == etag:
                    continue
                changed.append(ion_id)
        log.info("ION %s: %d of %d record(s) in scope changed since the last sync (_etag scan)",
                 name, len(changed), total)
        yield from self._by_id(name, changed, name)

    def _keyset(self, name: str, filters: dict[str, Any], since: datetime | None, sort: str) -> Iterator[_Node]:
        """Keyset paging over ``updatedAt`` (see the module docstring)."""
        raw: str | None = since.isoformat() if since is not None else None
        at: datetime | None = since
        op = "gte"
        boundary: set[str] = set()  # ids already yielded whose updatedAt == `at`
        while True:
            page_filters = dict(filters)
            if raw is not None:
                page_filters["updatedAt"] = {op: raw}
            page, has_next, _ = self._page(name, {"filters": page_filters, "sort": [sort],
                                                  "first": self._page_size})
            nodes = [item.node for item in page]
            stamps = [_stamp(node) for node in nodes]
            _check_order(stamps, at, op, name)
            for item, stamp in zip(page, stamps, strict=True):
                if stamp is not None and stamp[1] == at and node_id(item.node) in boundary:
                    continue  # read on the previous page
                yield item
            if not has_next:
                return
            known = [s for s in stamps if s is not None]
            if not known:
                raise FatalApiError(f"ION {name}: a page without updatedAt values says more pages follow; "
                                    f"cannot page safely", hint=SCHEMA_HINT)
            first, last = known[0], known[-1]
            if first[1] == last[1]:
                # The whole page shares one updatedAt: more records may carry it than a page holds.
                # Read that group by id exclusion, then go on strictly after it.
                seen = {node_id(n) for n in nodes} | (boundary if last[1] == at else set())
                yield from self._tie_group(name, filters, last[0], last[1], seen, sort)
                raw, at, op, boundary = last[0], last[1], "gt", set()
                continue
            raw, at, op = last[0], last[1], "gte"
            boundary = {node_id(n) for n, s in zip(nodes, stamps, strict=True) if s and s[1] == at}

    def _tie_group(self, name: str, filters: dict[str, Any], raw: str, at: datetime, seen: set[str],
                   sort: str) -> Iterator[_Node]:
        """Every record whose updatedAt is exactly ``at`` and whose id is not in ``seen``."""
        while True:
            page_filters = {**filters, "updatedAt": {"eq": raw}, "id": {"notIn": sorted(seen)}}
            page, has_next, _ = self._page(name, {"filters": page_filters, "sort": [sort],
                                                  "first": self._page_size})
            new = 0
            for item in page:
                node = item.node
                stamp = _stamp(node)
                if stamp is None or stamp[1] != at:
                    raise FatalApiError(f"ION {name}: the answer to updatedAt == {raw} holds other times; "
                                        f"ION ignored the filter, cannot page safely", hint=SCHEMA_HINT)
                key = node_id(node)
                if key in seen:
                    continue
                seen.add(key)
                new += 1
                yield item
            if not has_next:
                return
            if new == 0:
                msg = f"ION {name}: paging the records updated at {raw} is stuck (`id notIn` ignored)"
                raise PaginationLoopError(msg, hint=SCHEMA_HINT)

    # ---- records -----------------------------------------------------------------------------

    def changed_purchase_orders(self, since: datetime | None, statuses: Sequence[str] | None
                                ) -> Iterator[PurchaseOrder | InvalidRecord]:
        """Purchase orders updated at or after ``since`` with one of ``statuses``, oldest change first.

        Never skips a record that qualifies for the whole read, even when records are updated while
        the pages are read; a record updated during the read may come twice (old, then new version).
        Where the live schema cannot filter and sort by updatedAt, every order in scope is listed by
        (id, _etag) and only those whose _etag differs from the last sync are read in full.

        Args:
            since: aware datetime; None reads every purchase order.
            statuses: ionqbo status names (``ORDERED``, ``CANCELED``...); None for every status, empty for none.

        Yields:
            A PurchaseOrder, or an InvalidRecord for a node that cannot be parsed.
        """
        plan = self.plan()
        filters: dict[str, Any] = {}
        wanted: set[str] | None = None
        if statuses is not None:
            if not statuses:
                return
            live = [plan.status_out(s) for s in statuses if plan.statuses is None or plan.status_out(s)
                    in plan.statuses]
            if not live:
                return
            read = plan.po
            ops = read.filter_ops.get("status", frozenset()) if read else frozenset()
            if "in" in ops:
                filters["status"] = {"in": live}
            elif "eq" in ops and len(live) == 1:
                filters["status"] = {"eq": live[0]}
            wanted = set(statuses)  # ION cannot filter by status: the scope is applied here
        for item in self._changed("PurchaseOrders", filters, since, "purchase_order"):
            record = _parse(item, "purchase_order", parse_purchase_order)
            if (wanted is not None and "status" not in filters and isinstance(record, PurchaseOrder)
                    and record.status not in wanted):
                continue
            yield record

    def changed_parts(self, since: datetime | None) -> Iterator[Part | InvalidRecord]:
        """Parts created or updated at or after ``since``, oldest change first.

        Same guarantees as :meth:`changed_purchase_orders`.
        """
        for item in self._changed("Parts", {}, since, "part"):
            yield _parse(item, "part", parse_part)

    def purchase_orders_by_id(self, ids: Sequence[str]) -> Iterator[PurchaseOrder | InvalidRecord]:
        """The purchase orders with these ids (any status); ids ION does not know are left out."""
        for item in self._by_id("PurchaseOrders", ids, "purchase orders"):
            yield _parse(item, "purchase_order", parse_purchase_order)

    def parts_by_id(self, ids: Sequence[str]) -> Iterator[Part | InvalidRecord]:
        """The parts with these ids; ids ION does not know are left out."""
        for item in self._by_id("Parts", ids, "parts"):
            yield _parse(item, "part", parse_part)

    def _by_id(self, name: str, ids: Sequence[str], label: str) -> Iterator[_Node]:
        wanted = list(dict.fromkeys(str(i) for i in ids))
        if not wanted:
            return
        read = self._read_for(name)
        docs = self._documents()
        found: set[str] = set()
        if read.id_in:
            size = max(1, min(ID_CHUNK, self._page_size))
            for start in range(0, len(wanted), size):
                chunk = wanted[start:start + size]
                # Sorted by id where ION can: the order cannot shift while the (rare) second page is read.
                variables = {"filters": {"id": {"in": chunk}}, "sort": [read.sort_id] if read.sort_id else None}
                for nodes in self._pages(name, variables):
                    for item in nodes:
                        found.add(node_id(item.node))
                        yield item
        else:
            single = docs.single[name]
            role = docs.roles[single]
            plan = self.plan()
            for ion_id in wanted:
                data, errors = self._run_doc(single, {"id": ion_id})
                raw = data.get(docs.roots[single])
                if raw is None and not errors:
                    continue
                if role == "po" and isinstance(raw, dict):
                    self._attach_lines([raw])
                node_errors = [dict(e, path=[docs.roots[single], "edges", 0, "node", *e.get("path", [])[1:]])
                               for e in errors if isinstance(e, dict)]
                found.add(ion_id)
                yield _Node(plan.canonical(role, raw) if raw is not None else {"id": ion_id}, node_errors)
        missing = [i for i in wanted if i not in found]
        if missing:
            log.info("ION has no %s with id %s", label, ", ".join(missing[:20]))

    def user_id_by_email(self, email: str) -> str | None:
        """The id of the ION user with this e-mail (ION's own matching), or None."""
        docs = self._documents()
        if "Users" not in docs:
            raise FatalApiError("ION has no users query: the notification's recipient cannot be found")
        data = self.execute(docs["Users"], self._variables("Users", {"filters": {"email": {"eq": email}},
                                                                    "first": 2}))
        nodes, _, _ = _connection(data, "users", "Users")
        ids = [node_id(n) for n in nodes if node_id(n)]
        if len(ids) > 1:
            log.warning("ION has %d users with e-mail %s; notifying the first", len(ids), email)
        return ids[0] if ids else None

    def me(self) -> dict[str, Any]:
        """The ION user the API key acts as (``id``, ``name``, ``email``, ``organization``)."""
        data = self.execute(queries.ME)
        user = data.get("me")
        if not isinstance(user, dict):
            raise FatalApiError("ION answered `me` without a user", hint=AUTH_HINT)
        return user

    def dispatch_notification(self, user_id: str, title: str, description: str,
                              notification_type: str = "WARNING") -> str | None:
        """Show a notification to one ION user; sent once, never retried (it is a write).

        Returns:
            ION's message id, or None when ION sends none.
        """
        data = self.execute(queries.DISPATCH_NOTIFICATION, {"input": {
            "userId": user_id,
            "notificationType": notification_type,
            "title": title,
            "description": description,
        }})
        payload = data.get("dispatchNotification")
        response = payload.get("response") if isinstance(payload, dict) else None
        message_id = response.get("messageId") if isinstance(response, dict) else None
        return str(message_id) if message_id is not None else None


# ---- helpers -------------------------------------------------------------------------------------


def _id_order(value: str) -> tuple[int, int, str]:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


@lru_cache(maxsize=64)
def _operation(query: str) -> tuple[str, bool]:
    """(operation name, is it a mutation) of a document with one operation."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        raise FatalApiError(f"invalid GraphQL document: {exc.message}") from None
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            name = definition.name.value if definition.name else "anonymous"
            return name, definition.operation == OperationType.MUTATION
    raise FatalApiError("GraphQL document has no operation")


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    msg = f"cannot send {type(value).__name__} to ION"
    raise TypeError(msg)


def _error_text(errors: Any) -> str:
    """`message (at path)` for each GraphQL error, redacted and bounded."""
    items = errors if isinstance(errors, list) else [errors]
    parts = []
    for item in items[:5]:
        if isinstance(item, dict):
            text = str(item.get("message", item))
            path = item.get("path")
            if isinstance(path, list) and path:
                text += f" (at {'.'.join(str(p) for p in path)})"
        else:
            text = str(item)
        parts.append(text)
    if len(items) > 5:
        parts.append(f"and {len(items) - 5} more")
    return redact("; ".join(parts))[:1000]


def _connection(data: dict[str, Any], root: str, name: str) -> tuple[list[Any], bool, str | None]:
    """(nodes, hasNextPage, endCursor) of a Relay connection; FatalApiError for any other shape."""
    conn = data.get(root)

    def bad(what: str) -> FatalApiError:
        return BadResponseError(f"ION {name}: {what}; not a Relay connection", hint=SCHEMA_HINT)

    if not isinstance(conn, dict):
        raise bad(f"`{root}` is {type(conn).__name__}")
    edges = conn.get("edges")
    info = conn.get("pageInfo")
    if not isinstance(edges, list):
        raise bad(f"`{root}.edges` is {type(edges).__name__}")
    if not isinstance(info, dict):
        raise bad(f"`{root}.pageInfo` is {type(info).__name__}")
    nodes = []
    for i, edge in enumerate(edges):
        if not isinstance(edge, dict) or "node" not in edge:
            raise bad(f"`{root}.edges[{i}]` has no node")
        nodes.append(edge["node"])
    has_next = info.get("hasNextPage")
    if not isinstance(has_next, bool):
        raise bad(f"`{root}.pageInfo.hasNextPage` is {has_next!r}")
    end = info.get("endCursor")
    return nodes, has_next, end if isinstance(end, str) else None


def _node_errors(errors: Any, root: str) -> dict[int, list[dict[str, Any]]] | None:
    """Errors by node index when every one points into a node of ``root``'s edges; else None."""
    per_node: dict[int, list[dict[str, Any]]] = {}
    for error in errors if isinstance(errors, list) else []:
        path = error.get("path") if isinstance(error, dict) else None
        if not (isinstance(path, list) and len(path) >= 4 and path[0] == root and path[1] == "edges"
                and isinstance(path[2], int) and path[3] == "node"):
            return None
        per_node.setdefault(path[2], []).append(error)
    return per_node or None


def _stamp(node: Any) -> tuple[str, datetime] | None:
    """(raw text, parsed time) of a node's updatedAt, or None when it has no readable one."""
    raw = node.get("updatedAt") if isinstance(node, dict) else None
    if not isinstance(raw, str):
        return None
    parsed = read_time(raw)
    return (raw, parsed) if parsed is not None else None


def _field_path(path: Sequence[Any]) -> str:
    """``["purchaseOrderLines", 0, "part", "partNumber"]`` -> ``purchaseOrderLines[0].part.partNumber``."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


def _check_order(stamps: list[tuple[str, datetime] | None], at: datetime | None, op: str, name: str) -> None:
    """Keyset paging is only safe when ION filters and sorts by updatedAt as asked: check it."""
    previous = at
    for stamp in stamps:
        if stamp is None:
            continue
        when = stamp[1]
        if previous is not None and (when < previous or (op == "gt" and at is not None and when == at)):
            raise FatalApiError(
                f"ION {name}: records are not in updatedAt order from the cursor ({stamp[0]} after "
                f"{previous.isoformat()}); ION ignored the filter or sort, cannot page safely",
                hint=SCHEMA_HINT)
        previous = when


def _parse(item: _Node, kind: str, parser: Callable[[Any], T]) -> T | InvalidRecord:
    """The parsed record, or an InvalidRecord naming the field (from ION's error or from parsing)."""
    stamp = _stamp(item.node)
    ion_id = node_id(item.node)
    if item.errors:
        first = item.errors[0]
        field = _field_path(first.get("path", [])[4:]) or None
        message = redact(str(first.get("message", "error")))[:300]
        label = kind.replace("_", " ")
        exc = MalformedRecordError(
            f"{label} {ion_id or '?'}: ION could not return field {field}: {message}", kind=kind,
            ion_id=ion_id, field=field, hint=f"correct {field} on this {label} in ION")
    else:
        try:
            return parser(item.node)
        except MalformedRecordError as error:
            exc = error
    log.warning("%s", exc.message)
    return InvalidRecord(kind=kind, ion_id=ion_id, error=exc, updated_at=stamp[1] if stamp else None)

