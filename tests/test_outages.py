"""Outage suite (issue 16): a service that is down ends the run fast, and the next run converges.

Each fault is held for a whole `ionqbo sync` (the real CLI, a subprocess) against the sandbox. The
run must end with exit 5 and one `error:` line that names the service (then one `fix:` line), send
nothing more to that service once a request has used up its tries, and stay within its bounds: the
run's own recorded duration (`--json`, duration_seconds) under 90 s, a generous subprocess timeout
on top. After the fault is lifted, one more sync converges: no duplicate in QBO, nothing lost.

The settings are scaled down (3 tries, a 2 s read timeout where a service never answers, 0.2 s throttle waits)
so that the suite is quick; `tests/test_outage_bounds.py` shows the bounds hold with the defaults.
The figures for docs/reliability.md come from `benchmarks/outages.py`, which runs these cases with
the default settings.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import Env, Run, make_env

MAX_RETRIES = 3  # the default is 5: fewer tries keep the suite quick, the rule is the same


@dataclass(frozen=True)
class Case:
    side: str  # "qbo" | "ion": the emulator that is faulted
    faults: dict[str, Any]
    expect: tuple[str, ...]  # words the error line holds, besides the service's name
    settings: dict[str, str] = field(default_factory=dict)
    token: bool = False  # QBO: fault the token endpoint only, after expiring the access token
    max_requests: int = MAX_RETRIES  # requests the faulted service may see in the faulted run


CASES = {
    "qbo-503": Case("qbo", {"error_rate": 1, "statuses": [503]}, ("unavailable", "503", "intuit_tid=")),
    "qbo-500": Case("qbo", {"error_rate": 1, "statuses": [500]}, ("unavailable", "500", "intuit_tid="),
                    max_requests=2),  # QBO: "resubmit the request once"
    "qbo-drops-connections": Case("qbo", {"drop_rate": 1}, ("unreachable", "ConnectionError")),
    "qbo-never-answers": Case("qbo", {"hang_rate": 1}, ("unreachable", "ReadTimeout"),
                              {"IONQBO_HTTP_TIMEOUT": "2"}),
    "qbo-answers-after-5s": Case("qbo", {"latency": 5}, ("deadline", "IONQBO_RUN_DEADLINE"),
                                 {"IONQBO_RUN_DEADLINE": "9"}, max_requests=4),
    "qbo-token-endpoint-down": Case("qbo", {"error_rate": 1, "statuses": [503], "only_paths": ["/oauth2"]},
                                    ("unavailable", "token", "503"), token=True, max_requests=MAX_RETRIES + 1),
    "qbo-throttles-everything": Case("qbo", {"error_rate": 1, "statuses": [429]}, ("unavailable", "429")),
    "ion-503": Case("ion", {"error_rate": 1, "statuses": [503]}, ("unavailable", "503")),
    "ion-never-answers": Case("ion", {"hang_rate": 1}, ("unreachable", "ReadTimeout"), {"IONQBO_HTTP_TIMEOUT": "2"}),
    "ion-token-endpoint-down": Case("ion", {"error_rate": 1, "statuses": [503], "only_paths": ["/realms"]},
                                    ("unavailable", "token", "503")),
}


def _change_ion(box: Any) -> None:
    """Work for the faulted run: one PO line changes, one PO with a new part is added."""
    box.ion.update_line(1042, 5001, {"quantity": 31, "totalCost": 1317.5})
    box.ion.add_part({"id": 777001, "partNumber": "OUT-1", "revision": "A", "description": "outage part",
                      "cost": 4, "isLatestRevision": True})
    box.ion.add_purchase_order({
        "id": 7001, "status": "ORDERED", "supplierId": 2, "currencyId": 1,
        "purchaseOrderLines": [{"id": 70011, "partId": 777001, "quantity": 3, "unitCost": 4, "totalCost": 12}],
    })


def _requests(box: Any, side: str) -> int:
    return int(box.qbo.counters["total"] if side == "qbo" else box.ion.counters["total"])


def error_lines(run: Run) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("error:")]


def assert_one_error_line(run: Run, service: str, *words: str) -> str:
    """Exactly one `error:` line, naming ``service``, followed by exactly one `fix:` line."""
    lines = error_lines(run)
    assert len(lines) == 1, run.stderr
    line = lines[0]
    assert service in line, line
    for word in words:
        assert word in line, (word, line)
    after = run.stderr.splitlines()
    fix = after[after.index(line) + 1:]
    assert fix and fix[0].startswith("  fix: "), run.stderr
    assert sum(1 for x in after if x.strip().startswith("fix:")) == 1, run.stderr
    message = line + "\n" + fix[0]
    for phrase in ("next run", "nothing was lost", "what was done is saved", "fix:"):
        assert message.count(phrase) <= 1, (phrase, message)  # no repeated text
    assert "Traceback" not in run.stderr
    return line


def assert_books(box: Any) -> None:
    """QBO holds every in-scope ION PO once (1045 has an unmapped expense code: it stays queued)."""
    dump = box.qbo.dump()
    docs = collections.Counter(str(p.get("DocNumber")) for p in dump["PurchaseOrder"])
    assert all(n == 1 for n in docs.values()), docs
    names = collections.Counter(str(i.get("Name")).lower() for i in dump["Item"])
    assert all(n == 1 for n in names.values()), names
    assert set(docs) == {"1042", "1043", "1044", "7001"}
    po = next(p for p in dump["PurchaseOrder"] if p["DocNumber"] == "1042")
    quantities = [line["ItemBasedExpenseLineDetail"]["Qty"] for line in po["Line"]
                  if line.get("DetailType") == "ItemBasedExpenseLineDetail"]
    assert 31 in [float(q) for q in quantities], quantities
    assert "OUT-1 Rev A" in {str(i.get("Name")) for i in dump["Item"]}


FIGURES = Path("/tmp/ionqbo-reliability/outages.json")


def _record(name: str, seconds: float, sent: int, line: str) -> None:
    """Keep each case's figures (docs/reliability.md, the outage table)."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    figures[name] = {"seconds": round(seconds, 1), "requests_to_the_service": sent, "error": line}
    FIGURES.write_text(json.dumps(figures, indent=2))


def _clean_sync(env: Env) -> Run:
    run = env.run("sync", "--json")
    assert run.code == 3, run.stderr  # PO 1045 needs a mapping: queued, as in every sample run
    return run


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_service_that_is_down_ends_the_run_and_the_next_run_converges(sandbox: Any, tmp_path: Path,
                                                                         name: str) -> None:
    case = CASES[name]
    env = make_env(sandbox, tmp_path, IONQBO_MAX_RETRIES=str(MAX_RETRIES), **case.settings)
    _clean_sync(env)
    _change_ion(sandbox)
    emulator = sandbox.qbo if case.side == "qbo" else sandbox.ion
    if case.token:
        sandbox.qbo.expire_access_tokens()
        sandbox.qbo.configure(faults_on_token=True)
    before = _requests(sandbox, case.side)
    emulator.faults.configure(**case.faults)
    try:
        down = env.run("sync", "--json", timeout=200)
    finally:
        emulator.faults.clear()
        sandbox.qbo.configure(faults_on_token=False)
    sent = _requests(sandbox, case.side) - before
    assert down.code == 5, down.stderr
    service = case.side.upper()
    assert_one_error_line(down, service, *case.expect)
    report = down.json()
    assert report["exit_code"] == 5
    assert report["duration_seconds"] < 90, report["duration_seconds"]
    # Once a request gave up, nothing more went to the service.
    assert sent <= case.max_requests, (sent, down.stderr)
    _record(name, report["duration_seconds"], sent, error_lines(down)[0])
    # The fault is lifted: one more sync converges, with no duplicate and nothing lost.
    again = _clean_sync(env)
    assert not error_lines(again)
    assert_books(sandbox)
    state = json.loads((env.state_dir / "state.json").read_text())
    assert state["last_run"]["exit_code"] == 3
