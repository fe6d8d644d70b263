"""QBO token store, refresh (rotation, invalid_grant, races between processes) and `connect`."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from ionqbo.config import Settings
from ionqbo.errors import (
    AuthError,
    ConfigError,
    ConsentRequiredError,
    ExitCode,
    StateError,
    UnavailableError,
    UsageError,
    WrongCompanyError,
)
from ionqbo.http import RetryPolicy
from ionqbo.qbo.auth import QboAuth, TokenRecord, TokenStore, connect
from ionqbo.sandbox.httpd import Request, Response, Server, json_response

REALM = "9130350000000001"
TOKEN_URL = "https://oauth.test/oauth2/v1/tokens/bearer"
NOW = 1_750_000_000.0


def make_settings(tmp_path: Path, **over: str) -> Settings:
    values = {
        "QBO_CLIENT_ID": "client-id",
        "QBO_CLIENT_SECRET": "client-secret-xyz",
        "QBO_ENVIRONMENT": "sandbox",
        "QBO_TOKEN_URL": TOKEN_URL,
        "QBO_AUTH_URL": "https://appcenter.test/connect/oauth2",
        "QBO_BASE_URL": "https://qbo.test",
        "IONQBO_STATE_DIR": str(tmp_path / "state"),
    }
    values.update(over)
    return Settings.from_values({k: v for k, v in values.items() if v})


def record(**over: object) -> TokenRecord:
    base: dict[str, object] = {
        "environment": "sandbox", "realm_id": REALM, "refresh_token": "rt-0", "access_token": "at-0",
        "access_expires_at": NOW + 3600, "refresh_expires_at": NOW + 86400 * 100, "connected_at": NOW - 10,
        "updated_at": NOW - 10,
    }
    base.update(over)
    return TokenRecord(**base)  # type: ignore[arg-type]


def make_auth(tmp_path: Path, rec: TokenRecord | None = None, **over: str) -> tuple[QboAuth, TokenStore]:
    settings = make_settings(tmp_path, **over)
    store = TokenStore(settings.token_store_path)
    if rec is not None:
        store.save(rec)
    policy = RetryPolicy(tries=3, sleep=lambda s: None)
    return QboAuth(settings, store, clock=lambda: NOW, policy=policy), store


def token_body(n: int, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"token_type": "bearer", "expires_in": 3600, "refresh_token": f"rt-{n}",
                               "x_refresh_token_expires_in": 8726400, "access_token": f"at-{n}"}
    body.update(extra)
    return body


# ---- the store ----------------------------------------------------------------------------------


def test_store_is_0600_in_0700_dir_and_written_atomically(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "state" / "qbo-tokens.json")
    store.save(record())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    data = json.loads(store.path.read_text())
    assert data["version"] == 1
    assert set(data) == {"version", "environment", "realm_id", "access_token", "access_expires_at",
                         "refresh_token", "refresh_expires_at", "refresh_hard_expires_at", "connected_at",
                         "updated_at"}
    assert data["access_expires_at"].endswith("Z")  # ISO UTC
    assert store.load() == record()
    assert [p.name for p in store.path.parent.iterdir()] == ["qbo-tokens.json"]  # no temp file left


def test_store_keeps_old_file_when_the_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TokenStore(tmp_path / "qbo-tokens.json")
    store.save(record(refresh_token="rt-old"))

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    from ionqbo.errors import DiskFullError

    with pytest.raises(DiskFullError, match="disk is full"):  # exit 5, one plain line
        store.save(record(refresh_token="rt-new"))
    monkeypatch.undo()
    loaded = store.load()
    assert loaded is not None
    assert loaded.refresh_token == "rt-old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qbo-tokens.json"]


def test_store_tightens_a_readable_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.json")
    store.save(record())
    os.chmod(store.path, 0o644)
    store.load()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


@pytest.mark.parametrize(("text", "needle"), [
    pytest.param("{not json", "not valid JSON", id="corrupt"),
    pytest.param('{"version": 2}', "version 2", id="newer-version"),
    pytest.param('{"version": 1, "realm_id": "1"}', "lacks", id="missing-field"),
])
def test_store_rejects_bad_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(StateError, match=needle):
        TokenStore(path).load()


# ---- access tokens and refresh -------------------------------------------------------------------


def test_fresh_token_is_used_without_a_request(tmp_path: Path) -> None:
    auth, _ = make_auth(tmp_path, record())
    with responses.RequestsMock(assert_all_requests_are_fired=True):
        assert auth.access_token() == "at-0"
    assert auth.realm_id == REALM


def test_refresh_when_less_than_five_minutes_remain_persists_the_rotated_token(tmp_path: Path) -> None:
    auth, store = make_auth(tmp_path, record(access_expires_at=NOW + 299))
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(TOKEN_URL, json=token_body(1, x_refresh_token_hard_expires_in=156032154))
        assert auth.access_token() == "at-1"
        sent = rsps.calls[0].request
    basic = base64.b64encode(b"client-id:client-secret-xyz").decode()
    assert sent.headers["Authorization"] == "Basic " + basic
    assert sent.headers["x-include-refresh-token-hard-expires-in"] == "true"
    assert parse_qs(sent.body) == {"grant_type": ["refresh_token"], "refresh_token": ["rt-0"]}
    saved = store.load()
    assert saved is not None
    assert (saved.refresh_token, saved.access_token) == ("rt-1", "at-1")
    assert saved.access_expires_at == NOW + 3600
    assert saved.refresh_expires_at == NOW + 8726400
    assert saved.refresh_hard_expires_at == NOW + 156032154
    assert saved.connected_at == NOW - 10  # kept
    assert auth.request_count == 1


def test_no_token_is_handed_out_unless_the_rotation_was_saved(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    auth, store = make_auth(tmp_path, record(access_expires_at=NOW - 1))

    def fail(rec: TokenRecord) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "save", fail)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(TOKEN_URL, json=token_body(1))
        with pytest.raises(OSError):
            auth.access_token()


def test_invalid_grant_means_consent(tmp_path: Path) -> None:
    auth, _ = make_auth(tmp_path, record(access_expires_at=NOW - 1))
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(TOKEN_URL, status=400,
                  json={"error": "invalid_grant", "error_description": "Token invalid"})
        with pytest.raises(ConsentRequiredError) as info:
            auth.access_token()
    assert info.value.exit_code == ExitCode.AUTH
    assert "ionqbo connect" in str(info.value)
    assert "rt-0" not in str(info.value)


def test_invalid_grant_rereads_the_store_and_uses_a_newer_refresh_token(tmp_path: Path) -> None:
    auth, store = make_auth(tmp_path, record(access_expires_at=NOW - 1))

    def rejected(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        # meanwhile `ionqbo connect` (which does not wait for our lock) stored a new refresh token
        store.save(record(refresh_token="rt-connect", access_token="at-old", access_expires_at=NOW - 1))
        return 400, {}, json.dumps({"error": "invalid_grant"})

    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.add_callback(responses.POST, TOKEN_URL, callback=rejected,
                          match=[responses.matchers.urlencoded_params_matcher(
                              {"grant_type": "refresh_token", "refresh_token": "rt-0"})])
        rsps.post(TOKEN_URL, json=token_body(7), match=[responses.matchers.urlencoded_params_matcher(
            {"grant_type": "refresh_token", "refresh_token": "rt-connect"})])
        assert auth.access_token() == "at-7"
    saved = store.load()
    assert saved is not None
    assert saved.refresh_token == "rt-7"


def test_a_200_error_body_is_never_taken_for_tokens(tmp_path: Path) -> None:
    auth, store = make_auth(tmp_path, record(access_expires_at=NOW - 1))
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(TOKEN_URL, json={"error": "invalid_grant"})
        with pytest.raises(ConsentRequiredError):
            auth.access_token()
    saved = store.load()
    assert saved is not None
    assert saved.refresh_token == "rt-0"


def test_token_endpoint_5xx_and_resets_are_retried(tmp_path: Path) -> None:
    auth, _ = make_auth(tmp_path, record(access_expires_at=NOW - 1))
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(TOKEN_URL, body=requests.ConnectionError("reset"))
        rsps.post(TOKEN_URL, status=503, body="<html>down</html>")
        rsps.post(TOKEN_URL, json=token_body(2))
        assert auth.access_token() == "at-2"
    assert auth.request_count == 3


def test_token_endpoint_down_is_unavailable(tmp_path: Path) -> None:
    auth, _ = make_auth(tmp_path, record(access_expires_at=NOW - 1))
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        for _ in range(3):
            rsps.post(TOKEN_URL, status=502, body="bad gateway")
        with pytest.raises(UnavailableError) as info:
            auth.access_token()
    assert info.value.exit_code == ExitCode.UNAVAILABLE


def test_bad_client_secret_is_an_auth_error_without_the_secret(tmp_path: Path) -> None:
    auth, _ = make_auth(tmp_path, record(access_expires_at=NOW - 1))
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(TOKEN_URL, status=401, json={"error": "invalid_client"})
        with pytest.raises(AuthError) as info:
            auth.access_token()
    assert "QBO_CLIENT_SECRET" in str(info.value)
    assert "client-secret-xyz" not in str(info.value)


@pytest.mark.parametrize(("stored", "rejected", "calls", "expected"), [
    pytest.param("at-0", "at-0", 1, "at-1", id="same-token-refreshes"),
    pytest.param("at-other", "at-0", 0, "at-other", id="another-process-refreshed-already"),
])
def test_force_refresh(tmp_path: Path, stored: str, rejected: str, calls: int, expected: str) -> None:
    auth, _ = make_auth(tmp_path, record(access_token=stored))
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        if calls:
            rsps.post(TOKEN_URL, json=token_body(1))
        assert auth.force_refresh(rejected) == expected
        assert len(rsps.calls) == calls


def test_seed_from_refresh_token_setting(tmp_path: Path) -> None:
    auth, store = make_auth(tmp_path, None, QBO_REFRESH_TOKEN="rt-seed", QBO_REALM_ID=REALM)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(TOKEN_URL, json=token_body(1), match=[responses.matchers.urlencoded_params_matcher(
            {"grant_type": "refresh_token", "refresh_token": "rt-seed"})])
        assert auth.access_token() == "at-1"
    saved = store.load()
    assert saved is not None
    assert (saved.realm_id, saved.environment, saved.refresh_token) == (REALM, "sandbox", "rt-1")


def test_seed_is_ignored_once_the_store_holds_a_token(tmp_path: Path) -> None:
    auth, store = make_auth(tmp_path, record(), QBO_REFRESH_TOKEN="rt-seed")
    assert auth.access_token() == "at-0"
    saved = store.load()
    assert saved is not None
    assert saved.refresh_token == "rt-0"


def test_seed_needs_the_realm(tmp_path: Path) -> None:
    auth, _ = make_auth(tmp_path, None, QBO_REFRESH_TOKEN="rt-seed")
    with pytest.raises(ConfigError, match="QBO_REALM_ID"):
        auth.access_token()


def test_no_store_no_seed_means_consent(tmp_path: Path) -> None:
    auth, _ = make_auth(tmp_path, None)
    with pytest.raises(ConsentRequiredError, match="not connected"):
        auth.access_token()


@pytest.mark.parametrize(("over", "names"), [
    pytest.param({"QBO_REALM_ID": "4620816365000000001"}, ("4620816365000000001", REALM), id="realm"),
    pytest.param({"QBO_ENVIRONMENT": "production"}, ("production", "sandbox"), id="environment"),
])
def test_wrong_company(tmp_path: Path, over: dict[str, str], names: tuple[str, str]) -> None:
    auth, _ = make_auth(tmp_path, record(), **over)
    with pytest.raises(WrongCompanyError) as info:
        auth.access_token()
    assert info.value.exit_code == ExitCode.AUTH
    for name in names:
        assert name in str(info.value)
    assert auth.health()["problem"]


def test_health_reports_expiries_and_no_secrets(tmp_path: Path) -> None:
    auth, _ = make_auth(tmp_path, record(refresh_hard_expires_at=NOW + 5 * 365 * 86400))
    health = auth.health()
    assert health["connected"] is True
    assert health["access_expires_in"] == 3600
    assert health["refresh_hard_expires_at"].startswith("2030-")
    assert "at-0" not in json.dumps(health)
    assert "rt-0" not in json.dumps(health)
    empty, _ = make_auth(tmp_path / "other", None)
    assert empty.health()["connected"] is False


# ---- two processes refreshing at once --------------------------------------------------------------


class RotatingTokenServer:
    """A tiny Intuit-like token endpoint: each refresh rotates the token and kills the old one at once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.current = "rt-0"
        self.issued = 0
        self.refreshes = 0
        self.valid_access: set[str] = set()
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        with self.lock:
            if form.get("grant_type") == "authorization_code":
                ok = form.get("code") == "the-code"
            else:
                self.refreshes += 1
                ok = form.get("refresh_token") == self.current
            if not ok:
                return json_response(400, {"error": "invalid_grant"})
            self.issued += 1
            self.current = f"rt-{self.issued}"
            access = f"at-{self.issued}"
            self.valid_access.add(access)
            response = json_response(200, token_body(self.issued))
        response.delay = self.delay
        return response


RACER = r"""
import json, sys, time
from pathlib import Path
from ionqbo.config import Settings
from ionqbo.qbo.auth import QboAuth, TokenStore
settings = Settings.from_values(json.loads(sys.argv[1]))
auth = QboAuth(settings, TokenStore(settings.token_store_path))
go = Path(sys.argv[2])
(go.parent / f"ready-{sys.argv[3]}").touch()  # imported and about to wait: the test waits for both
while not go.exists():
    time.sleep(0.002)
print(auth.access_token())
"""


def test_two_processes_refreshing_at_once_keep_the_refresh_token(tmp_path: Path) -> None:
    app = RotatingTokenServer(delay=0.3)  # both processes are in flight at the same time
    with Server(app) as server:
        values = {"QBO_CLIENT_ID": "client-id", "QBO_CLIENT_SECRET": "client-secret-xyz",
                  "QBO_ENVIRONMENT": "sandbox", "QBO_TOKEN_URL": server.url + "/token",
                  "IONQBO_STATE_DIR": str(tmp_path / "state")}
        settings = Settings.from_values(values)
        store = TokenStore(settings.token_store_path)
        store.save(record(access_expires_at=time.time() - 10))
        go = tmp_path / "go"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        procs = [subprocess.Popen([sys.executable, "-c", RACER, json.dumps(values), str(go), str(n)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for n in range(2)]
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{n}").exists() for n in range(2)):  # both wait: released together
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a racer did not start"
            time.sleep(0.01)
        go.touch()
        outputs = [p.communicate(timeout=20) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() in app.valid_access
    saved = store.load()
    assert saved is not None
    assert saved.refresh_token == app.current  # the latest valid token is the one stored
    assert app.refreshes == 1  # the second process used the first one's token


# ---- connect ----------------------------------------------------------------------------------------


def _redirect_for(consent_url: str, redirect_uri: str, **extra: str) -> str:
    state = parse_qs(urlsplit(consent_url).query)["state"][0]
    params = {"code": "the-code", "state": state, "realmId": REALM, **extra}
    return redirect_uri + "?" + "&".join(f"{k}={v}" for k, v in params.items())


def _consent_url(lines: list[str]) -> str:
    return next(word for line in lines for word in line.split() if word.startswith("http"))


def test_connect_no_browser_stores_tokens(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, QBO_REDIRECT_URI="https://app.example.com/qbo/callback")
    store = TokenStore(settings.token_store_path)
    lines: list[str] = []
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(TOKEN_URL, json=token_body(1, x_refresh_token_hard_expires_in=1000))
        summary = connect(settings, store, no_browser=True, open_browser=lambda u: False,
                          prompt=lambda text: _redirect_for(_consent_url(lines), settings.qbo_redirect_uri),
                          echo=lines.append, clock=lambda: NOW)
        sent = rsps.calls[0].request
    consent = urlsplit(_consent_url(lines))
    query = parse_qs(consent.query)
    assert consent.netloc == "appcenter.test"
    assert query["scope"] == ["com.intuit.quickbooks.accounting"]
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == ["https://app.example.com/qbo/callback"]
    assert parse_qs(sent.body) == {"grant_type": ["authorization_code"], "code": ["the-code"],
                                   "redirect_uri": ["https://app.example.com/qbo/callback"]}
    assert sent.headers["Authorization"].startswith("Basic ")
    assert sent.headers["x-include-refresh-token-hard-expires-in"] == "true"
    saved = store.load()
    assert saved is not None
    assert (saved.realm_id, saved.environment, saved.refresh_token) == (REALM, "sandbox", "rt-1")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert summary["realm_id"] == REALM
    assert summary["environment"] == "sandbox"
    assert "rt-1" not in json.dumps(summary)
    assert "at-1" not in json.dumps(summary)
    assert "OAUTHLIB_INSECURE_TRANSPORT" not in os.environ


@pytest.mark.parametrize(("mangle", "error"), [
    pytest.param(lambda url: url.replace("state=", "state=x"), AuthError, id="state-mismatch"),
    pytest.param(lambda url: url.split("?")[0] + "?error=access_denied&state=" + parse_qs(
        urlsplit(url).query)["state"][0], AuthError, id="denied"),
    pytest.param(lambda url: url.replace(REALM, "123"), WrongCompanyError, id="other-company"),
])
def test_connect_rejects_bad_redirects(tmp_path: Path, mangle: object, error: type[Exception]) -> None:
    settings = make_settings(tmp_path, QBO_REDIRECT_URI="https://app.example.com/cb", QBO_REALM_ID=REALM)
    store = TokenStore(settings.token_store_path)
    lines: list[str] = []
    with responses.RequestsMock(assert_all_requests_are_fired=True), pytest.raises(error):
        connect(settings, store, no_browser=True, open_browser=lambda u: False,
                prompt=lambda text: mangle(_redirect_for(_consent_url(lines), settings.qbo_redirect_uri)),  # type: ignore[operator]
                echo=lines.append)
    assert store.load() is None


def test_connect_refuses_a_listener_on_a_public_host(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, QBO_REDIRECT_URI="http://example.com:8765/cb")
    with pytest.raises(UsageError, match="--no-browser"):
        connect(settings, TokenStore(settings.token_store_path), no_browser=False,
                open_browser=lambda u: True, prompt=input, echo=lambda s: None)


def test_connect_refuses_plain_http_to_a_public_token_host(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, QBO_TOKEN_URL="http://oauth.example.com/token",
                             QBO_REDIRECT_URI="https://app.example.com/cb")
    with pytest.raises(UsageError, match="plain http"):
        connect(settings, TokenStore(settings.token_store_path), no_browser=True,
                open_browser=lambda u: True, prompt=lambda s: "", echo=lambda s: None)
    assert "OAUTHLIB_INSECURE_TRANSPORT" not in os.environ


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connect_listener_times_out(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, QBO_REDIRECT_URI=f"http://localhost:{_free_port()}/callback")
    with pytest.raises(AuthError, match="no redirect"):
        connect(settings, TokenStore(settings.token_store_path), no_browser=False,
                open_browser=lambda u: True, prompt=input, echo=lambda s: None, timeout=0.3)


def test_connect_listener_receives_the_redirect(tmp_path: Path) -> None:
    app = RotatingTokenServer()
    port = _free_port()
    with Server(app) as server:
        settings = make_settings(tmp_path, QBO_REDIRECT_URI=f"http://127.0.0.1:{port}/callback",
                                 QBO_TOKEN_URL=server.url + "/token",
                                 QBO_AUTH_URL=server.url + "/connect/oauth2")
        pages: list[requests.Response] = []

        def browser(url: str) -> bool:
            def visit() -> None:
                requests.get(f"http://127.0.0.1:{port}/favicon.ico", timeout=5)  # ignored path
                pages.append(requests.get(_redirect_for(url, settings.qbo_redirect_uri), timeout=5))

            threading.Thread(target=visit, daemon=True).start()
            return True

        store = TokenStore(settings.token_store_path)
        summary = connect(settings, store, no_browser=False, open_browser=browser, prompt=input,
                          echo=lambda s: None, timeout=10)
    assert summary["realm_id"] == REALM
    assert pages[0].status_code == 200
    assert "close this window" in pages[0].text
    saved = store.load()
    assert saved is not None
    assert saved.refresh_token == app.current
    assert "OAUTHLIB_INSECURE_TRANSPORT" not in os.environ
