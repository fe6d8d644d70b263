"""The CLI around the sync: `sandbox --print-env`, `connect` (listener and --no-browser), alerts and pings."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests

from ionqbo.config import SPECS
from ionqbo.sandbox.httpd import Request, Response, Server, json_response

from conftest import CLI, Env, make_env, po_batches_after

PRINT_ENV_KEYS = {
    "ION_API_URL", "ION_TOKEN_URL", "ION_CLIENT_ID", "ION_CLIENT_SECRET", "QBO_BASE_URL", "QBO_TOKEN_URL",
    "QBO_AUTH_URL", "QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_REALM_ID", "QBO_REFRESH_TOKEN",
    "QBO_AP_ACCOUNT_ID", "QBO_INVENTORY_ASSET_ACCOUNT_ID", "QBO_INCOME_ACCOUNT_ID", "QBO_COGS_ACCOUNT_ID",
    "QBO_FEE_ACCOUNT_ID",
}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {s.name for s in SPECS}}


def test_sandbox_print_env_then_sync_against_it(tmp_path: Path) -> None:
    proc = subprocess.Popen([*CLI, "sandbox", "--print-env", "--allow-duplicate-docnumbers"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_clean_env())
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(len(PRINT_ENV_KEYS) + 3)]
        values = dict(line.split("=", 1) for line in lines if "=" in line)
        assert set(values) >= PRINT_ENV_KEYS
        knobs = requests.post(f"{values['QBO_BASE_URL']}/_admin/settings", json={}, timeout=10).json()
        assert knobs["allow_duplicate_docnumbers"] is True  # the lenient reading of QBO's DocNumber rule
        env_file = tmp_path / "sandbox.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items())
                            + f"IONQBO_STATE_DIR={tmp_path / 'state'}\n")
        run = subprocess.run([*CLI, "sync", "--json", "--env-file", str(env_file)], capture_output=True, text=True,
                             env=_clean_env(), timeout=120, check=False)
        report = json.loads(run.stdout)
        assert run.returncode == 3, run.stderr  # the sample's PO 1045 lacks its expense account
        assert report["purchase_orders"]["created"] == 3
        assert stat.S_IMODE((tmp_path / "state" / "qbo-tokens.json").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode in (0, -15)


def _without_token(env: Env) -> None:
    env.values.pop("QBO_REFRESH_TOKEN")
    env.write()


def test_connect_no_browser_with_the_pasted_redirect(env: Env) -> None:
    _without_token(env)
    proc = subprocess.Popen([*CLI, "connect", "--no-browser", "--env-file", str(env.path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env())
    assert proc.stderr is not None and proc.stdin is not None
    consent = ""
    deadline = time.monotonic() + 20
    while not consent and time.monotonic() < deadline:
        line = proc.stderr.readline()
        consent = next((w for w in line.split() if w.startswith("http") and "/connect/oauth2" in w), "")
    assert consent, "connect printed no consent URL"
    # The person opens the URL, approves, and copies the address the browser lands on.
    answer = requests.get(consent, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    redirect = answer.headers["Location"]
    assert parse_qs(urlparse(redirect).query)["state"]
    out, err = proc.communicate(redirect + "\n", timeout=30)
    assert proc.returncode == 0, err
    assert env.box.qbo.realm_id in out
    store = env.state_dir / "qbo-tokens.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    data = json.loads(store.read_text())
    assert data["realm_id"] == env.box.qbo.realm_id and data["refresh_token"]
    assert data["refresh_token"] not in out + err
    # and the stored tokens work
    assert env.run("sync", "--json").json()["purchase_orders"]["created"] == 3


def test_connect_rejects_a_forged_state(env: Env) -> None:
    _without_token(env)
    proc = subprocess.Popen([*CLI, "connect", "--no-browser", "--env-file", str(env.path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env())
    assert proc.stderr is not None
    consent = ""
    deadline = time.monotonic() + 20
    while not consent and time.monotonic() < deadline and proc.poll() is None:
        consent = next((w for w in proc.stderr.readline().split() if "/connect/oauth2" in w), "")
    assert consent, "connect printed no consent URL"
    redirect = requests.get(consent, allow_redirects=False, timeout=10).headers["Location"]
    forged = redirect.replace("state=", "state=forged")
    _out, err = proc.communicate(forged + "\n", timeout=30)
    assert proc.returncode == 4, err
    assert "state" in err.lower()
    assert not (env.state_dir / "qbo-tokens.json").exists()


class Receiver:
    """A local webhook / health-check receiver that records what it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    def __call__(self, request: Request) -> Response:
        try:
            body: Any = json.loads(request.body) if request.body else None
        except ValueError:
            body = request.body.decode("utf-8", "replace")
        self.requests.append((request.method, request.path, body))
        return json_response(200, {"ok": True})


def test_alerts_reach_the_webhook_and_ion_once_and_pings_report_the_outcome(sandbox: Any, tmp_path: Path) -> None:
    receiver = Receiver()
    with Server(receiver) as server:
        env = make_env(sandbox, tmp_path, IONQBO_NOTIFY_WEBHOOK=f"{server.url}/hooks/T000/B000/secret-token",
                       IONQBO_NOTIFY_ION_USER="ada@example.com", IONQBO_HEALTHCHECK_URL=f"{server.url}/ping/abc")
        first = env.run("sync")
        assert first.code == 3
        hooks = [r for r in receiver.requests if r[1].startswith("/hooks/")]
        pings = [r[1] for r in receiver.requests if r[1].startswith("/ping/")]
        assert len(hooks) == 1 and "1045" in json.dumps(hooks[0][2])
        assert pings == ["/ping/abc"]  # exit 3 (records queued) is a successful run for the monitor
        assert len(sandbox.ion.notifications) == 1
        assert "1045" in json.dumps(sandbox.ion.notifications[0])
        assert "secret-token" not in first.stdout + first.stderr

        second = env.run("sync")
        assert second.code == 3
        assert len([r for r in receiver.requests if r[1].startswith("/hooks/")]) == 1  # no new problem: no alert
        assert len(sandbox.ion.notifications) == 1

    # the monitor and the webhook are gone: the sync still ends as it should, and says so on stderr
    third = env.run("sync")
    assert third.code == 3
    assert "health" in third.stderr.lower() or "ping" in third.stderr.lower()


def test_healthcheck_fail_suffix_when_qbo_consent_is_gone(sandbox: Any, tmp_path: Path) -> None:
    receiver = Receiver()
    with Server(receiver) as server:
        env = make_env(sandbox, tmp_path, IONQBO_HEALTHCHECK_URL=f"{server.url}/ping/abc/",
                       QBO_REFRESH_TOKEN="not-a-valid-token")
        run = env.run("sync")
        assert run.code == 4, run.stderr
        assert "ionqbo connect" in run.stderr
        assert [r[1] for r in receiver.requests] == ["/ping/abc/fail"]


def test_log_format_json_and_log_file(env: Env, tmp_path: Path) -> None:
    log_file = tmp_path / "ionqbo.log"
    run = env.run("sync", "--log-format", "json", "--log-file", str(log_file))
    assert run.code == 3
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(line.get("ion_id") == "1045" and line["level"] == "WARNING" for line in lines)
    for line in lines:
        assert {"time", "level", "event"} <= set(line)
    for line in run.stderr.splitlines():
        json.loads(line)  # every stderr line is JSON too
    secrets = [env.values["ION_CLIENT_SECRET"], env.values["QBO_CLIENT_SECRET"], env.values["QBO_REFRESH_TOKEN"]]
    text = log_file.read_text() + run.stderr + run.stdout
    assert not [s for s in secrets if s in text]


def test_progress_never_reaches_a_pipe(env: Env) -> None:
    run = env.run("sync")
    assert "\r" not in run.stderr and "\r" not in run.stdout


def test_dry_run_takes_no_lock_and_a_second_sync_exits_75(env: Env) -> None:
    env.set(IONQBO_HTTP_TIMEOUT="150")  # a held request is not timed out
    env.gate.close(po_batches_after(0))  # the sync holds the lock, its first write held; a dry run writes nothing
    proc = env.popen("sync")
    lock = env.state_dir / "sync.lock"
    try:
        env.gate.wait_holding(proc)
        second = env.run("sync", "--json")
        assert second.code == 75, second.stderr
        assert second.stdout == ""
        dry = env.run("sync", "--dry-run")  # while the lock is held
        assert dry.code in (0, 3), dry.stderr
        assert proc.poll() is None
    finally:
        env.gate.open()
    proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert lock.exists()
