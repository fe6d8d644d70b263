"""QBO OAuth 2.0: the token store, access-token refresh serialized across processes, and `connect`.

Intuit access tokens last an hour; refresh tokens rotate and the previous one may die as soon as the
new one is issued (qbo-api.md section 2; peers.md section 2.1: the most common complaint about QBO
integrations is a rotated refresh token that was never saved). So:

- every new refresh token is written to the store (atomically, 0600) before the access token that
  came with it is used;
- a refresh happens under an ``fcntl.flock`` on a sibling lock file, after re-reading the store: a
  process that waited for another one's refresh uses the token that one stored;
- ``invalid_grant`` means the refresh token is dead; the store is re-read once (another writer, such
  as ``ionqbo connect``, may have replaced it) and otherwise the user is told to run ``ionqbo connect``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from ionqbo import clock as local_clock
from ionqbo.config import Settings
from ionqbo.errors import (
    ApiError,
    AuthError,
    ConfigError,
    ConsentRequiredError,
    StateError,
    UnavailableError,
    UsageError,
    WrongCompanyError,
)
from ionqbo.http import (
    RETRY_EXCEPTIONS,
    Breaker,
    RetryPolicy,
    describe,
    excerpt,
    make_session,
    redact,
    send_with_retry,
)
from ionqbo.state import local_fault, replace_file

log = logging.getLogger("ionqbo.qbo.auth")

STORE_VERSION = 1
SCOPE = "com.intuit.quickbooks.accounting"
# Refresh when less than this remains: a run that starts with 4 minutes left would see its token
# expire between two requests.
REFRESH_MARGIN = 300.0
# Opt-in header: the token response then carries x_refresh_token_hard_expires_in, the 5-year limit
# (qbo-api.md section 2, Intuit's 2025 refresh-token policy).
HARD_EXPIRY_HEADER = {"x-include-refresh-token-hard-expires-in": "true"}
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CONNECT_HINT = "run `ionqbo connect` to authorize ionqbo for QuickBooks Online again"


# ---- the token store ----------------------------------------------------------------------------


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _epoch(value: Any) -> float | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class TokenRecord:
    """What the token store holds. Times are epoch seconds here, ISO UTC strings on disk."""

    environment: str
    realm_id: str
    refresh_token: str
    access_token: str = ""
    access_expires_at: float | None = None
    refresh_expires_at: float | None = None
    refresh_hard_expires_at: float | None = None
    connected_at: float | None = None
    updated_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The on-disk form (version 1)."""
        data: dict[str, Any] = {"version": STORE_VERSION}
        for key, value in asdict(self).items():
            data[key] = _iso(value) if key.endswith("_at") else value
        return data

    @classmethod
    def from_json(cls, data: Any, path: Path) -> TokenRecord:
        """Read the on-disk form; a wrong shape raises StateError naming the file."""
        if not isinstance(data, dict):
            msg = f"token store {path} is not a JSON object"
            raise StateError(msg, hint=CONNECT_HINT)
        if data.get("version") != STORE_VERSION:
            msg = (f"token store {path} has version {data.get('version')!r}; "
                   f"this ionqbo reads version {STORE_VERSION}")
            raise StateError(msg, hint="upgrade ionqbo, or run `ionqbo connect` to write a new store")
        try:
            return cls(
                environment=str(data["environment"]),
                realm_id=str(data["realm_id"]),
                refresh_token=str(data["refresh_token"]),
                access_token=str(data.get("access_token") or ""),
                access_expires_at=_epoch(data.get("access_expires_at")),
                refresh_expires_at=_epoch(data.get("refresh_expires_at")),
                refresh_hard_expires_at=_epoch(data.get("refresh_hard_expires_at")),
                connected_at=_epoch(data.get("connected_at")),
                updated_at=_epoch(data.get("updated_at")),
            )
        except KeyError as exc:
            msg = f"token store {path} lacks {exc.args[0]!r}"
            raise StateError(msg, hint=CONNECT_HINT) from None


class TokenStore:
    """The QBO token file: JSON, mode 0600 in a 0700 directory, written atomically.

    Refreshes are serialized across processes with ``fcntl.flock`` on ``<file>.lock`` (see :meth:`lock`).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def load(self) -> TokenRecord | None:
        """The stored record, or None when there is no store yet.

        Raises:
            StateError: the file cannot be read or is not a token store.
        """
        try:
            with self.path.open("rb") as fh:
                mode = os.fstat(fh.fileno()).st_mode & 0o777
                raw = fh.read()
        except FileNotFoundError:
            return None
        except NotADirectoryError as exc:
            raise local_fault(exc, self.path) from None
        except OSError as exc:
            msg = f"cannot read token store {self.path}: {exc.strerror}"
            raise StateError(msg) from None
        if mode & 0o077:
            log.warning("token store %s was readable by others (mode %o); setting 0600", self.path, mode)
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
        try:
            data = json.loads(raw)
        except ValueError:
            msg = f"token store {self.path} is not valid JSON"
            raise StateError(msg, hint=CONNECT_HINT) from None
        record = TokenRecord.from_json(data, self.path)
        redact.add(record.access_token, record.refresh_token)
        return record

    def save(self, record: TokenRecord) -> None:
        """Write ``record`` atomically: temp file (0600) in the same directory, fsync, rename, fsync dir."""
        redact.add(record.access_token, record.refresh_token)
        data = (json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")
        try:
            replace_file(self.path, data)
        except OSError as exc:
            raise local_fault(exc, self.path) from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the exclusive refresh lock (blocks until other processes release it)."""
        parent = self.lock_path.parent
        try:
            if not parent.exists():
                parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(parent, 0o700)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise local_fault(exc, self.lock_path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# ---- token endpoint -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grant:
    access_token: str
    refresh_token: str | None
    expires_in: float
    refresh_expires_in: float | None
    refresh_hard_expires_in: float | None


class _InvalidGrant(Exception):
    """The token endpoint answered ``invalid_grant``."""


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _token_response(response: requests.Response, what: str) -> _Grant:
    """Decode a token-endpoint answer; error bodies are never taken for tokens."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if response.status_code == 200 and isinstance(body, dict) and not error:
        access = body.get("access_token")
        if isinstance(access, str) and access:
            refresh = body.get("refresh_token")
            return _Grant(
                access_token=access,
                refresh_token=refresh if isinstance(refresh, str) and refresh else None,
                expires_in=_number(body.get("expires_in")) or 3600.0,
                refresh_expires_in=_number(body.get("x_refresh_token_expires_in")),
                refresh_hard_expires_in=_number(body.get("x_refresh_token_hard_expires_in")),
            )
        msg = f"{what}: the token endpoint answered 200 without an access token"
        raise ApiError(msg, status=200)
    if error == "invalid_grant":
        raise _InvalidGrant
    if error == "invalid_client" or response.status_code == 401:
        msg = f"{what}: Intuit rejected the app's client id or secret ({describe(response)})"
        hint = "check QBO_CLIENT_ID and QBO_CLIENT_SECRET (developer.intuit.com > your app > Keys)"
        raise AuthError(msg, hint=hint)
    if response.status_code >= 500 or response.status_code == 429:
        msg = f"{what}: the Intuit token endpoint is unavailable: {describe(response)}"
        raise UnavailableError(msg, status=response.status_code)
    msg = f"{what}: {describe(response)}"
    raise ApiError(msg, status=response.status_code, code=str(error) if error else None)


def _record_from_grant(
    grant: _Grant, *, now: float, environment: str, realm_id: str, previous: TokenRecord | None
) -> TokenRecord:
    refresh = grant.refresh_token or (previous.refresh_token if previous else "")
    if grant.refresh_hard_expires_in is not None:
        hard: float | None = now + grant.refresh_hard_expires_in
    else:
        hard = previous.refresh_hard_expires_at if previous else None
    if grant.refresh_expires_in is not None:
        soft: float | None = now + grant.refresh_expires_in
    else:
        soft = previous.refresh_expires_at if previous else None
    return TokenRecord(
        environment=environment,
        realm_id=realm_id,
        refresh_token=refresh,
        access_token=grant.access_token,
        access_expires_at=now + grant.expires_in,
        refresh_expires_at=soft,
        refresh_hard_expires_at=hard,
        connected_at=previous.connected_at if previous and previous.connected_at else now,
        updated_at=now,
    )


# ---- access tokens --------------------------------------------------------------------------


class QboAuth:
    """Hands out valid QBO access tokens, refreshing them (serialized across processes) when due.

    Args:
        settings: client id and secret, token URL, environment, pinned realm, optional seed token.
        store: the token store.
        session: HTTP session for the token endpoint (one is made if omitted).
        clock: wall-clock seconds since the epoch (injectable).
        policy: retry policy for token calls.
    """

    def __init__(
        self,
        settings: Settings,
        store: TokenStore,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = local_clock.epoch,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.session = session or make_session(timeout=settings.http_timeout, name="qbo", bounded=True)
        self.clock = clock
        self.policy = policy or RetryPolicy(tries=settings.max_retries, throttle_wait=settings.throttle_wait)
        # Shared with QboClient: once the token endpoint or the API gives up, nothing more goes to QBO.
        self.breaker = Breaker("QBO")
        self.request_count = 0  # token-endpoint requests sent
        self._thread_lock = threading.Lock()
        redact.add(settings.qbo_client_secret, settings.qbo_refresh_token)

    # -- reading the store --

    def _check(self, record: TokenRecord) -> TokenRecord:
        pinned = self.settings.qbo_realm_id
        if pinned and pinned != record.realm_id:
            msg = (f"the token store {self.store.path} is connected to QBO company {record.realm_id}, "
                   f"but QBO_REALM_ID is {pinned}")
            hint = "fix QBO_REALM_ID, or run `ionqbo connect` for the other company"
            raise WrongCompanyError(msg, hint=hint)
        if self.settings.qbo_environment != record.environment:
            msg = (f"the token store {self.store.path} was connected in the QBO {record.environment} "
                   f"environment, but QBO_ENVIRONMENT is {self.settings.qbo_environment}")
            raise WrongCompanyError(msg, hint="fix QBO_ENVIRONMENT, or run `ionqbo connect` again")
        return record

    def _load(self) -> TokenRecord:
        record = self.store.load()
        if record is None:
            return self._seed()
        return self._check(record)

    def _seed(self) -> TokenRecord:
        """Seed an empty store from QBO_REFRESH_TOKEN (headless set-up), or ask for consent."""
        seed = self.settings.qbo_refresh_token
        if not seed:
            msg = f"ionqbo is not connected to QuickBooks Online (no token store at {self.store.path})"
            hint = "run `ionqbo connect` (or set QBO_REFRESH_TOKEN and QBO_REALM_ID)"
            raise ConsentRequiredError(msg, hint=hint)
        if not self.settings.qbo_realm_id:
            problem = "QBO_REALM_ID is not set; it is required when QBO_REFRESH_TOKEN seeds the store"
            raise ConfigError([problem])
        with self.store.lock():
            existing = self.store.load()
            if existing is not None:  # another process seeded (or connected) first
                return self._check(existing)
            now = self.clock()
            record = TokenRecord(environment=self.settings.qbo_environment,
                                 realm_id=self.settings.qbo_realm_id,
                                 refresh_token=seed, connected_at=now, updated_at=now)
            self.store.save(record)
            log.info("seeded the QBO token store %s from QBO_REFRESH_TOKEN", self.store.path)
            return record

    @property
    def realm_id(self) -> str:
        """The QBO company (realm) the store is connected to."""
        return self._load().realm_id

    def _fresh(self, record: TokenRecord) -> bool:
        return bool(record.access_token) and record.access_expires_at is not None and (
            record.access_expires_at - self.clock() > REFRESH_MARGIN)

    # -- handing out tokens --

    def access_token(self) -> str:
        """A valid access token, refreshed first when less than 5 minutes remain.

        Raises:
            ConsentRequiredError: the refresh token is dead; `ionqbo connect` is needed (exit 4).
            WrongCompanyError: the store belongs to another company or environment (exit 4).
            UnavailableError: the token endpoint stayed unavailable (exit 5).
        """
        record = self._load()
        if self._fresh(record):
            return record.access_token
        return self._refresh(rejected=None)

    def force_refresh(self, rejected: str) -> str:
        """After QBO answered 401 to ``rejected``: refresh, unless the store already holds another token."""
        return self._refresh(rejected=rejected)

    def _refresh(self, *, rejected: str | None) -> str:
        with self._thread_lock, self.store.lock():
            # Another process may have refreshed while we waited for the lock: use its token.
            record = self._load()
            if self._fresh(record) and (rejected is None or record.access_token != rejected):
                return record.access_token
            try:
                return self._refresh_with(record)
            except _InvalidGrant:
                pass
            # A dead refresh token. Re-read once: a writer that does not take our lock (`ionqbo
            # connect` from another shell, a restored backup) may have stored a newer one.
            again = self._load()
            if again.refresh_token != record.refresh_token:
                if self._fresh(again) and again.access_token != rejected:
                    return again.access_token
                try:
                    return self._refresh_with(again)
                except _InvalidGrant:
                    pass
            msg = ("QBO refused the stored refresh token (invalid_grant): "
                   "it expired, was revoked or was replaced")
            raise ConsentRequiredError(msg, hint=CONNECT_HINT)

    def _refresh_with(self, record: TokenRecord) -> str:
        """One refresh with ``record``'s refresh token; the rotated token is saved before it is returned.

        Retried on connection errors and 5xx: the refresh token is consumed only by a refresh that
        succeeded. The remaining risk is a response lost after Intuit rotated the token (we never see
        the new one). Intuit keeps the previous token usable for a while (qbo-api.md section 2,
        sources conflict on how long), so the retry usually succeeds; if not, the answer is
        invalid_grant, which the caller handles by re-reading the store and then asking for consent.
        """
        settings = self.settings

        def send() -> requests.Response:
            self.request_count += 1
            return self.session.post(
                settings.qbo_token_url,
                data={"grant_type": "refresh_token", "refresh_token": record.refresh_token},
                auth=(settings.qbo_client_id, settings.qbo_client_secret),
                headers={"Accept": "application/json", **HARD_EXPIRY_HEADER},
            )

        self.breaker.check()
        tries = self.policy.budget()
        what = "QBO token refresh (the Intuit token endpoint)"
        try:
            response = send_with_retry(send, self.policy, what="QBO token refresh",
                                       retry_statuses={429, 500, 502, 503, 504}, attempts=tries)
        except RETRY_EXCEPTIONS as exc:
            reason = f"{type(exc).__name__}: {redact(str(exc))[:200]}"
            raise self.breaker.trip(what, reason, tries=tries.count, seconds=tries.elapsed(),
                                        unreachable=True) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise self.breaker.trip(what, f"HTTP {response.status_code}: {excerpt(response)}", tries=tries.count,
                                    seconds=tries.elapsed(), status=response.status_code,
                                    tid=response.headers.get("intuit_tid"))
        grant = _token_response(response, "QBO token refresh")
        now = self.clock()
        new = _record_from_grant(grant, now=now, environment=record.environment, realm_id=record.realm_id,
                                 previous=record)
        self.store.save(new)  # persist the rotated refresh token BEFORE the access token is used
        if grant.refresh_token and grant.refresh_token != record.refresh_token:
            log.info("QBO refresh token rotated and saved to %s", self.store.path)
        return new.access_token

    def health(self) -> dict[str, Any]:
        """Token expiries for `ionqbo status` (no secrets). Never raises for a missing or foreign store."""
        now = self.clock()
        try:
            record = self.store.load()
        except StateError as exc:
            return {"connected": False, "problem": exc.message}
        if record is None:
            return {"connected": False, "store": str(self.store.path),
                    "seedable": bool(self.settings.qbo_refresh_token),
                    "problem": "not connected: run `ionqbo connect`"}
        problem = None
        try:
            self._check(record)
        except WrongCompanyError as exc:
            problem = exc.message

        def left(at: float | None) -> float | None:
            return None if at is None else round(at - now, 1)

        return {
            "connected": True,
            "store": str(self.store.path),
            "environment": record.environment,
            "realm_id": record.realm_id,
            "access_expires_at": _iso(record.access_expires_at),
            "access_expires_in": left(record.access_expires_at),
            "refresh_expires_at": _iso(record.refresh_expires_at),
            "refresh_expires_in": left(record.refresh_expires_at),
            "refresh_hard_expires_at": _iso(record.refresh_hard_expires_at),
            "refresh_hard_expires_in": left(record.refresh_hard_expires_at),
            "connected_at": _iso(record.connected_at),
            "updated_at": _iso(record.updated_at),
            "problem": problem,
        }


# ---- connect: the authorization-code flow ---------------------------------------------------


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _insecure_transport_for_loopback(*urls: str) -> Iterator[None]:
    """Let oauthlib accept http:// URLs, but only when every http URL involved is on loopback.

    oauthlib refuses plain http unless OAUTHLIB_INSECURE_TRANSPORT is set; the sandbox serves http
    on 127.0.0.1. The variable is set for the duration of the block only and restored after.
    """
    plain = [u for u in urls if urlsplit(u).scheme == "http"]
    if not plain:
        yield
        return
    for url in plain:
        if not _is_loopback(urlsplit(url).hostname):
            msg = f"{redact(url)} uses plain http on a host that is not loopback; Intuit's URLs are https"
            raise UsageError(msg, hint="use https URLs (http is accepted only for the local sandbox)")
    key = "OAUTHLIB_INSECURE_TRANSPORT"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _authorization_url(settings: Settings, state: str) -> str:
    from requests_oauthlib import OAuth2Session

    oauth = OAuth2Session(settings.qbo_client_id, redirect_uri=settings.qbo_redirect_uri, scope=[SCOPE],
                          state=state)
    with _insecure_transport_for_loopback(settings.qbo_auth_url, settings.qbo_token_url):
        url, returned_state = oauth.authorization_url(settings.qbo_auth_url)
    if returned_state != state:  # pragma: no cover - requests-oauthlib echoes the state it was given
        msg = "requests-oauthlib changed the OAuth state"
        raise AuthError(msg)
    return str(url)


@dataclass(frozen=True)
class _Redirect:
    code: str
    realm_id: str


def _parse_redirect(url: str, state: str, settings: Settings) -> _Redirect:
    """Check the redirect Intuit sent the browser to, and take the code and realm id from it."""
    query = parse_qs(urlsplit(url.strip()).query)

    def one(name: str) -> str:
        values = query.get(name) or [""]
        return values[0]

    if one("error"):
        msg = f"authorization was not given: {one('error')} {one('error_description')}".strip()
        raise AuthError(msg, hint="run `ionqbo connect` again and approve the connection")
    if not secrets.compare_digest(one("state"), state):
        msg = "the redirect's OAuth state does not match the one sent (a stale or forged redirect)"
        raise AuthError(msg, hint="run `ionqbo connect` again and use the newest consent URL")
    code, realm = one("code"), one("realmId")
    if not code or not realm:
        missing = " and ".join(n for n, v in (("code", code), ("realmId", realm)) if not v)
        msg = f"the redirect URL lacks {missing}"
        raise AuthError(msg, hint="paste the whole URL from the browser's address bar")
    if settings.qbo_realm_id and realm != settings.qbo_realm_id:
        msg = f"the consent was given for QBO company {realm}, but QBO_REALM_ID is {settings.qbo_realm_id}"
        raise WrongCompanyError(msg, hint="pick the company QBO_REALM_ID names, or change QBO_REALM_ID")
    return _Redirect(code=code, realm_id=realm)


class _OneShotServer(HTTPServer):
    result: str | None = None
    expected_path: str = "/"
    base_url: str = ""


class _RedirectHandler(BaseHTTPRequestHandler):
    server: _OneShotServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the URL carries the authorization code: never log it

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path != self.server.expected_path:
            self.send_error(404)
            return
        self.server.result = self.server.base_url + self.path
        failed = "error=" in (urlsplit(self.path).query or "")
        text = ("ionqbo did not get the authorization. Return to the terminal." if failed else
                "ionqbo received the authorization. You can close this window and return to the terminal.")
        body = f"<!doctype html><title>ionqbo</title><p>{text}</p>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def _listener(settings: Settings) -> _OneShotServer:
    """Bind the loopback listener for the redirect URI (before the browser is sent anywhere)."""
    parts = urlsplit(settings.qbo_redirect_uri)
    host = parts.hostname or ""
    if parts.scheme != "http" or not _is_loopback(host):
        msg = (f"cannot receive the redirect at {settings.qbo_redirect_uri}: the listener serves only "
               "http://127.0.0.1, http://localhost or http://[::1]")
        raise UsageError(msg, hint="run `ionqbo connect --no-browser` and paste the redirect URL instead")
    bind = "::1" if ":" in host else "127.0.0.1"  # never a public interface, even for "localhost"
    port = parts.port or 80

    class Server(_OneShotServer):
        address_family = socket.AF_INET6 if bind == "::1" else socket.AF_INET

    try:
        server = Server((bind, port), _RedirectHandler)
    except OSError as exc:
        msg = f"cannot listen on {bind} port {port} for the OAuth redirect: {exc.strerror}"
        raise UsageError(msg, hint="free the port, change QBO_REDIRECT_URI, or use --no-browser") from None
    server.expected_path = parts.path or "/"
    server.base_url = f"{parts.scheme}://{parts.netloc}"
    return server


def _wait_for_redirect(server: _OneShotServer, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    try:
        while True:
            if server.result is not None:
                return server.result
            left = deadline - time.monotonic()
            if left <= 0:
                msg = f"no redirect reached {server.base_url}{server.expected_path} within {timeout:g} s"
                hint = "run `ionqbo connect` again, or use --no-browser on a headless machine"
                raise AuthError(msg, hint=hint)
            server.timeout = min(left, 0.5)
            server.handle_request()
    finally:
        server.server_close()


def _exchange_code(settings: Settings, redirect: _Redirect, session: requests.Session) -> _Grant:
    """Trade the authorization code for tokens. Sent once: Intuit says to exchange a code only once."""
    with _insecure_transport_for_loopback(settings.qbo_token_url):
        try:
            response = session.post(
                settings.qbo_token_url,
                data={"grant_type": "authorization_code", "code": redirect.code,
                      "redirect_uri": settings.qbo_redirect_uri},
                auth=(settings.qbo_client_id, settings.qbo_client_secret),
                headers={"Accept": "application/json", **HARD_EXPIRY_HEADER},
            )
        except RETRY_EXCEPTIONS as exc:
            msg = f"the code exchange with Intuit failed: {type(exc).__name__}: {redact(str(exc))[:200]}"
            raise AuthError(msg, hint="run `ionqbo connect` again") from None
    try:
        return _token_response(response, "QBO code exchange")
    except _InvalidGrant:
        msg = ("Intuit refused the authorization code (invalid_grant): it expired, was used, "
               "or the redirect URI differs")
        hint = "run `ionqbo connect` again; check that QBO_REDIRECT_URI matches the app's"
        raise AuthError(msg, hint=hint) from None


def connect(
    settings: Settings,
    store: TokenStore,
    *,
    no_browser: bool,
    open_browser: Callable[[str], bool],
    prompt: Callable[[str], str],
    echo: Callable[[str], None],
    timeout: float = 300,
    session: requests.Session | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Run the OAuth 2.0 authorization-code flow and store the tokens and the company (realm) id.

    Args:
        settings: QBO client id/secret, redirect URI, consent and token URLs, environment.
        store: where the tokens go.
        no_browser: print the consent URL and ask for the pasted redirect URL instead of listening.
        open_browser: opens a URL; returns False when no browser is available.
        prompt: asks the user for a line of text.
        echo: prints a line for the user.
        timeout: seconds to wait for the redirect on the loopback listener.
        session: HTTP session for the code exchange.
        clock: wall-clock seconds since the epoch.

    Returns:
        A summary without secrets: realm_id, environment and the token expiries.

    Raises:
        AuthError: refused consent, state mismatch, timeout, rejected code.
        UsageError: the redirect URI cannot be served by a loopback listener.
        WrongCompanyError: consent was given for another company than QBO_REALM_ID.
    """
    settings.require(("QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_REDIRECT_URI"))
    redact.add(settings.qbo_client_secret)
    state = secrets.token_urlsafe(24)
    url = _authorization_url(settings, state)
    if no_browser:
        echo(f"Open this URL in a browser, sign in and approve ionqbo:\n\n  {url}\n")
        echo("Your browser is then sent to the redirect URI (the page may fail to load; that is fine).")
        pasted = prompt("Paste the full URL from the browser's address bar")
        redirect_url = pasted
    else:
        server = _listener(settings)
        echo(f"Opening the QuickBooks consent page. If no browser opens, visit:\n\n  {url}\n")
        try:
            opened = open_browser(url)
        except Exception:  # noqa: BLE001 - a broken browser launcher must not end the flow
            opened = False
        if not opened:
            echo("(No browser could be opened; open the URL above by hand.)")
        echo(f"Waiting up to {timeout:g} s for the redirect to {settings.qbo_redirect_uri} ...")
        redirect_url = _wait_for_redirect(server, timeout)
    redirect = _parse_redirect(redirect_url, state, settings)
    redact.add(redirect.code)
    session = session or make_session(timeout=settings.http_timeout, name="qbo-oauth")
    grant = _exchange_code(settings, redirect, session)
    if not grant.refresh_token:
        msg = "Intuit's token answer carried no refresh token"
        raise AuthError(msg, hint="run `ionqbo connect` again")
    now = clock()
    with store.lock():
        try:
            previous = store.load()
        except StateError:
            previous = None
        record = _record_from_grant(grant, now=now, environment=settings.qbo_environment,
                                    realm_id=redirect.realm_id, previous=None)
        record = replace(record, connected_at=now)
        store.save(record)
    summary: dict[str, Any] = {
        "realm_id": record.realm_id,
        "environment": record.environment,
        "store": str(store.path),
        "access_expires_at": _iso(record.access_expires_at),
        "refresh_expires_at": _iso(record.refresh_expires_at),
        "refresh_hard_expires_at": _iso(record.refresh_hard_expires_at),
        "connected_at": _iso(record.connected_at),
    }
    if previous is not None and (previous.realm_id, previous.environment) != (
            record.realm_id, record.environment):
        summary["replaced"] = {"realm_id": previous.realm_id, "environment": previous.environment}
    return summary
