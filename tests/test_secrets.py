"""Secrets: known, distinctive secret values never reach stdout, stderr, logs, the state or reports.

The ION client secret and the QBO client secret are set to distinctive values; every access and
refresh token the emulators issue during the runs is collected. Runs cover success, debug logging
to text and JSON log files, injected faults (error messages quote response bodies), a wrong ION
secret and a dead QBO refresh token (exit 4). Only the token store may hold the tokens. Also: file
modes (token store 0600, state directory 0700), no TLS verification switched off anywhere in the
code, the OAuth `state` checked, and the redirect listener bound to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ionqbo.config import SPECS

from conftest import CLI, ION_LAG, Env, make_env

ION_SECRET = "IonSecret-Zq7Kx2Wv9Lm4Rt8Pn3"
QBO_SECRET = "QboSecret-Hb5Jc1Fd6Gs0Ya2Xe9"
PACKAGE = Path(__file__).resolve().parent.parent / "ionqbo"
FIGURES = Path("/tmp/ionqbo-reliability")


@pytest.fixture
def secret_env(tmp_path: Path) -> Iterator[Env]:
    from ionqbo.sandbox.server import Sandbox

    box = Sandbox(sample=True, multicurrency=True, ion_lag=ION_LAG)
    box.ion.client_secret = ION_SECRET
    box.qbo.client_secret = QBO_SECRET
    box.start()
    try:
        yield make_env(box, tmp_path, IONQBO_THROTTLE_WAIT="0.1", IONQBO_MAX_RETRIES="2")
    finally:
        box.stop()


def _issued_tokens(box: Any) -> set[str]:
    """Every QBO access and refresh token and every live ION access token the emulators know."""
    oauth = box.qbo._oauth
    return set(oauth.refresh) | set(oauth.access) | set(oauth.codes) | set(box.ion._tokens)


def _subprocess_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {s.name for s in SPECS}}


def test_no_secret_in_output_logs_state_or_reports(secret_env: Env, tmp_path: Path) -> None:
    env, box = secret_env, secret_env.box
    seen: list[tuple[str, str]] = []
    tokens: set[str] = set()

    def run(*args: str) -> None:
        result = env.run(*args)
        seen.append((f"{' '.join(args)} stdout", result.stdout))
        seen.append((f"{' '.join(args)} stderr", result.stderr))
        tokens.update(_issued_tokens(box))

    text_log, json_log = tmp_path / "ionqbo.log", tmp_path / "ionqbo.jsonl"
    run("sync", "--json", "-v", "--log-file", str(text_log))
    run("sync", "-v", "--log-format", "json", "--log-file", str(json_log))
    run("status")
    run("status", "--json")
    run("check-mappings", "--json", "-v")
    run("retry")
    # faults: error messages quote response bodies and URLs
    box.qbo.expire_access_tokens()
    box.ion.expire_tokens()
    box.qbo.faults.configure(fail_next=[500, 503, 429, 0, 502])
    box.ion.faults.configure(fail_next=[503, 0, 502])
    box.ion.update_line(1042, 5001, {"quantity": 30, "totalCost": 1275.0})
    run("sync", "--json", "-v", "--log-file", str(text_log))
    run("sync", "--dry-run", "-v", "--log-format", "json", "--log-file", str(json_log))
    # (a run now stops at the first service that gave up, so faults may be left over: clear them)
    box.qbo.faults.clear()
    box.ion.faults.clear()
    # a wrong ION secret: exit 4, and the wrong value is not echoed either
    wrong = "WrongIonSecret-Uu8Ii7Oo6Pp5"
    env.set(ION_CLIENT_SECRET=wrong)
    bad_ion = env.run("sync", "-v", "--log-file", str(text_log))
    assert bad_ion.code == 4, bad_ion.stderr
    seen += [("bad ion stdout", bad_ion.stdout), ("bad ion stderr", bad_ion.stderr)]
    env.set(ION_CLIENT_SECRET=ION_SECRET)
    # a dead QBO refresh token: exit 4 (consent needed), no token printed
    tokens.update(_issued_tokens(box))
    box.qbo._oauth.refresh.clear()
    box.qbo.expire_access_tokens()
    dead = env.run("sync", "--json", "-v", "--log-file", str(text_log))
    assert dead.code == 4, dead.stderr
    assert "connect" in dead.stderr
    seen += [("dead refresh stdout", dead.stdout), ("dead refresh stderr", dead.stderr)]

    seen.append(("text log", text_log.read_text()))
    seen.append(("json log", json_log.read_text()))
    for path in env.state_dir.rglob("*"):
        if path.is_file() and path.name != "qbo-tokens.json":
            seen.append((str(path), path.read_text(errors="replace")))
    secrets = {ION_SECRET, QBO_SECRET, wrong} | {t for t in tokens if len(t) >= 8}
    assert len(secrets) >= 8
    leaks = [(where, secret[:6] + "...") for where, text in seen for secret in secrets if secret in text]
    figures = {"secret_values_checked": len(secrets), "outputs_scanned": len(seen),
               "runs": sum(1 for where, _ in seen if where.endswith("stdout")), "leaks_found": len(leaks)}
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "secrets.json").write_text(json.dumps(figures, indent=2))
    print("secrets figures:", json.dumps(figures))
    assert leaks == []
    # the logs are not empty: the check looked at real output
    assert "QBO" in text_log.read_text() and json_log.read_text().lstrip().startswith("{")
    store = (env.state_dir / "qbo-tokens.json").read_text()
    assert any(t in store for t in tokens)  # the token store is the one place that holds them


def test_token_store_is_0600_and_the_state_directory_0700(secret_env: Env) -> None:
    assert secret_env.run("sync").code == 3
    mode = stat.S_IMODE
    assert mode(secret_env.state_dir.stat().st_mode) == 0o700
    assert mode((secret_env.state_dir / "qbo-tokens.json").stat().st_mode) == 0o600
    assert mode((secret_env.state_dir / "state.json").stat().st_mode) == 0o600
    assert mode((secret_env.state_dir / "state.ledger.sqlite").stat().st_mode) == 0o600
    for path in secret_env.state_dir.iterdir():
        assert mode(path.stat().st_mode) & 0o077 == 0, path


def test_tls_verification_is_never_turned_off() -> None:
    pattern = re.compile(r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context")
    offenders = [f"{p.relative_to(PACKAGE)}:{n}" for p in PACKAGE.rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def _start_connect(env: Env, *args: str) -> tuple[subprocess.Popen[str], str]:
    """Start `ionqbo connect`, read stderr up to the consent URL; returns (process, url)."""
    proc = subprocess.Popen([*CLI, "connect", *args, "--env-file", str(env.path), "--timeout", "20"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**_subprocess_env(), "IONQBO_NO_BROWSER": "1"})
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/connect/oauth2\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise AssertionError("connect printed no consent URL")


def _consent(url: str) -> str:
    """Approve in the emulator: the redirect URL it sends the browser to (not followed)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(url, timeout=10)
    caught.value.close()
    assert caught.value.code == 302
    return str(caught.value.headers["Location"])


def test_oauth_state_is_checked(secret_env: Env) -> None:
    env = secret_env
    store = env.state_dir / "qbo-tokens.json"
    proc, url = _start_connect(env, "--no-browser")
    redirect = _consent(url)
    forged = re.sub(r"state=[^&]+", "state=forged-state-value", redirect)
    out, err = proc.communicate(forged + "\n", timeout=30)
    assert proc.returncode == 4, err
    assert "state does not match" in err
    assert not store.exists()  # nothing stored from a forged redirect
    # and with the real state it connects
    proc, url = _start_connect(env, "--no-browser")
    out, err = proc.communicate(_consent(url) + "\n", timeout=30)
    assert proc.returncode == 0, err
    assert store.exists()
    assert QBO_SECRET not in out + err


def _listening(port: int) -> list[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        for row in Path(name).read_text().splitlines()[1:]:
            fields = row.split()
            address, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(address)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
def test_redirect_listener_binds_loopback_only(secret_env: Env) -> None:
    env = secret_env
    port = urlsplit(env.values["QBO_REDIRECT_URI"]).port
    assert port is not None
    proc, url = _start_connect(env)
    try:
        deadline = time.monotonic() + 10
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _listening(port) == ["0100007F"]  # 127.0.0.1, and nothing else
        redirect = _consent(url)
        query = parse_qs(urlsplit(redirect).query)
        assert query["state"] and query["code"]
        with urllib.request.urlopen(redirect, timeout=10) as answer:  # the browser arriving
            assert answer.status == 200
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
