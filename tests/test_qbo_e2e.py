"""The QBO client, auth and `connect` against the QBO emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ionqbo.config import Settings
from ionqbo.http import RetryPolicy
from ionqbo.qbo.auth import QboAuth, TokenStore, connect
from ionqbo.qbo.client import QboClient, quote
from ionqbo.qbo.limiter import RateLimiter
from ionqbo.qbo.models import (
    BatchItem,
    DuplicateNameError,
    ObjectNotFoundError,
    StaleObjectError,
)
from ionqbo.sandbox.httpd import Server
from ionqbo.sandbox.qbo import QboEmulator

CLIENT_ID = "e2e-client"
CLIENT_SECRET = "e2e-client-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Env:
    emulator: QboEmulator
    server: Server
    tmp: Path

    def settings(self, **over: str) -> Settings:
        values = {
            "QBO_CLIENT_ID": CLIENT_ID, "QBO_CLIENT_SECRET": CLIENT_SECRET, "QBO_ENVIRONMENT": "sandbox",
            "QBO_BASE_URL": self.server.url, "QBO_TOKEN_URL": self.server.url + "/oauth2/v1/tokens/bearer",
            "QBO_AUTH_URL": self.server.url + "/connect/oauth2", "IONQBO_STATE_DIR": str(self.tmp / "state"),
            "QBO_REDIRECT_URI": f"http://127.0.0.1:{_free_port()}/callback", "IONQBO_HTTP_TIMEOUT": "10",
        }
        values.update(over)
        return Settings.from_values(values)

    def client(self) -> tuple[QboClient, list[float], TokenStore]:
        """A client connected through QBO_REFRESH_TOKEN (the headless set-up)."""
        settings = self.settings(QBO_REFRESH_TOKEN=self.emulator.issue_refresh_token(),
                                 QBO_REALM_ID=self.emulator.realm_id)
        store = TokenStore(settings.token_store_path)
        sleeps: list[float] = []
        auth = QboAuth(settings, store, policy=RetryPolicy(tries=3, sleep=sleeps.append))
        return QboClient(settings, auth, sleep=sleeps.append), sleeps, store


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[QboEmulator, Server]]:
    emulator = QboEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, seed=7)
    with Server(emulator) as server:  # one server for the module: each stop costs 0.5 s
        yield emulator, server


@pytest.fixture
def env(served: tuple[QboEmulator, Server], tmp_path: Path) -> Env:
    emulator, server = served
    emulator.reset()  # company data, requestid cache, counters
    emulator.faults.clear()
    return Env(emulator, server, tmp_path)


# ---- connect ------------------------------------------------------------------------------------------


def test_connect_with_the_loopback_listener(env: Env) -> None:
    settings = env.settings()
    store = TokenStore(settings.token_store_path)
    landed: list[requests.Response] = []

    def browser(url: str) -> bool:
        # the "browser": consent is auto-approved; follow the 302 to our listener
        thread = threading.Thread(target=lambda: landed.append(requests.get(url, timeout=10)), daemon=True)
        thread.start()
        return True

    summary = connect(settings, store, no_browser=False, open_browser=browser, prompt=input,
                      echo=lambda s: None, timeout=10)
    assert summary["realm_id"] == env.emulator.realm_id
    assert summary["environment"] == "sandbox"
    assert summary["refresh_hard_expires_at"]  # the opt-in header was sent
    assert landed[0].status_code == 200
    assert "close this window" in landed[0].text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    client = QboClient(settings, QboAuth(settings, store), sleep=lambda s: None)
    assert client.company_info()["CompanyName"]


def test_connect_without_a_browser(env: Env) -> None:
    settings = env.settings(QBO_REDIRECT_URI="https://ionqbo.example.com/qbo/callback")
    store = TokenStore(settings.token_store_path)
    lines: list[str] = []

    def paste(text: str) -> str:
        consent = next(w for line in lines for w in line.split() if w.startswith("http://127.0.0.1"))
        answer = requests.get(consent, allow_redirects=False, timeout=10)
        assert answer.status_code == 302
        return answer.headers["Location"]

    summary = connect(settings, store, no_browser=True, open_browser=lambda u: False, prompt=paste,
                      echo=lines.append)
    saved = store.load()
    assert saved is not None
    assert saved.realm_id == env.emulator.realm_id == summary["realm_id"]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert env.emulator.counters["token"] == 1


# ---- API -----------------------------------------------------------------------------------------------


NAMES = ["O'Brien Supply", "Back\\slash Parts", "Tail\\", "Plain Vendor", "O''Double"]


@pytest.mark.parametrize("name", NAMES)
def test_query_escaping_finds_exactly_the_named_vendor(env: Env, name: str) -> None:
    env.emulator.load({"Vendor": [{"DisplayName": n} for n in NAMES]})
    client, _, _ = env.client()
    rows = client.query(f"select * from Vendor where DisplayName = {quote(name)}")
    assert [r["DisplayName"] for r in rows] == [name]


def test_query_all_pages_through_the_emulator(env: Env) -> None:
    env.emulator.load({"Vendor": [{"DisplayName": f"Vendor {i:04d}"} for i in range(1203)]})
    client, _, _ = env.client()
    names = [r["DisplayName"] for r in client.query_all("Vendor", order_by="DisplayName")]
    assert names == [f"Vendor {i:04d}" for i in range(1203)]
    assert client.counts["query"] == 2


def test_batch_with_some_items_failing(env: Env) -> None:
    env.emulator.load({"Vendor": [{"DisplayName": "Taken Name"}]})
    client, _, _ = env.client()
    results = client.batch([
        BatchItem("ok", "create", "Vendor", {"DisplayName": "Fresh Vendor"}),
        BatchItem("dup", "create", "Vendor", {"DisplayName": "taken name"}),
        BatchItem("gone", "update", "Vendor", {"Id": "999999", "SyncToken": "0", "DisplayName": "X"}),
        BatchItem("q", "query", "", f"select * from Vendor where DisplayName = {quote('Taken Name')}"),
    ], request_id="e2e-batch-1")
    by_bid = {r.bid: r for r in results}
    assert by_bid["ok"].entity is not None
    assert by_bid["ok"].entity["DisplayName"] == "Fresh Vendor"
    assert isinstance(by_bid["dup"].fault, DuplicateNameError)
    assert isinstance(by_bid["gone"].fault, ObjectNotFoundError)
    assert [r["DisplayName"] for r in by_bid["q"].rows or []] == ["Taken Name"]
    assert len(client.query(f"select * from Vendor where DisplayName = {quote('Fresh Vendor')}")) == 1


def test_stale_sync_token(env: Env) -> None:
    client, _, _ = env.client()
    vendor = client.create("Vendor", {"DisplayName": "Stale Co"}, request_id="e2e-create-stale")
    updated = client.update("Vendor", {**vendor, "CompanyName": "Stale Company"}, request_id="e2e-upd-1")
    assert updated["SyncToken"] != vendor["SyncToken"]
    with pytest.raises(StaleObjectError) as info:
        client.update("Vendor", {**vendor, "CompanyName": "Lost Update"}, request_id="e2e-upd-2")
    assert info.value.code == "5010"
    assert info.value.tid  # the emulator, like QBO, sends intuit_tid


def test_a_repeated_requestid_does_not_create_twice(env: Env) -> None:
    client, _, _ = env.client()
    first = client.create("Vendor", {"DisplayName": "Once Only"}, request_id="e2e-once")
    again = client.create("Vendor", {"DisplayName": "Once Only"}, request_id="e2e-once")
    assert first["Id"] == again["Id"]
    assert len(env.emulator.dump()["Vendor"]) == 1
    assert env.emulator.counters["replayed"] == 1


def test_access_token_expiry_mid_run_costs_one_refresh(env: Env) -> None:
    client, _, store = env.client()
    client.preferences()
    before = store.load()
    tokens = env.emulator.counters["token"]
    env.emulator.expire_access_tokens()
    assert client.company_info()["CompanyName"]
    assert env.emulator.counters["token"] == tokens + 1
    after = store.load()
    assert before is not None
    assert after is not None
    assert after.access_token != before.access_token
    assert after.refresh_token != before.refresh_token  # the emulator rotates; the new one is saved


def test_throttling_waits_then_succeeds(env: Env) -> None:
    client, sleeps, _ = env.client()
    client.preferences()
    env.emulator.faults.configure(fail_next=[429])
    assert client.read("Vendor", client.create("Vendor", {"DisplayName": "After Throttle"},
                                                request_id="e2e-throttle")["Id"])["DisplayName"] == "After Throttle"
    assert sleeps == [60.0]
    assert env.emulator.counters["throttled"] == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(("per_second", "throttled"), [(9, 0), (1000, 1)])
def test_the_limiter_keeps_a_burst_under_the_emulated_limits(tmp_path: Path, per_second: int,
                                                             throttled: int) -> None:
    clock = FakeClock()  # shared by the emulator's rate windows and the client's limiter
    emulator = QboEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, rate_limits=True, clock=clock)
    with Server(emulator) as server:
        env = Env(emulator, server, tmp_path)
        client, _, _ = env.client()
        client.limiter = RateLimiter(per_second=per_second, clock=clock, sleep=clock.sleep)
        client.sleep = clock.sleep
        start = clock.now
        for _ in range(12):
            client.preferences()
    assert emulator.counters["throttled"] == throttled  # the 11th in one second is throttled, then the 60 s wait clears the window
    assert emulator.counters["preferences"] == 12
    if throttled == 0:
        assert clock.now - start > 1.0
