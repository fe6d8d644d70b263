"""Outage figures with the DEFAULT settings: how long a run against a service that is down takes.

For each fault (held for the whole run) this starts the sandbox in-process, runs one clean
`ionqbo sync`, changes ION, turns the fault on, and times one more `ionqbo sync --json` (the real
CLI, a subprocess) with ionqbo's default settings: 5 tries, a 60 s read timeout, 60 s throttle
waits, a 240 s run deadline. It prints one Markdown row per fault (docs/reliability.md, the outage
table) and writes /tmp/ionqbo-reliability/outages-defaults.json. The fault is then lifted and one
more sync must converge (exit 3: the sample's PO 1045 needs a mapping).

    python benchmarks/outages.py                 # every fault (about 10 minutes)
    python benchmarks/outages.py qbo-503 ion-503 # some of them
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ionqbo.config import SPECS
from ionqbo.sandbox.server import Sandbox

FAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "qbo-503": ("qbo", {"error_rate": 1, "statuses": [503]}),
    "qbo-500": ("qbo", {"error_rate": 1, "statuses": [500]}),
    "qbo-drops-connections": ("qbo", {"drop_rate": 1}),
    "qbo-never-answers": ("qbo", {"hang_rate": 1}),
    "qbo-answers-after-5s": ("qbo", {"latency": 5}),
    "qbo-token-endpoint-down": ("qbo", {"error_rate": 1, "statuses": [503], "only_paths": ["/oauth2"]}),
    "qbo-throttles-everything": ("qbo", {"error_rate": 1, "statuses": [429]}),
    "ion-503": ("ion", {"error_rate": 1, "statuses": [503]}),
    "ion-never-answers": ("ion", {"hang_rate": 1}),
    "ion-token-endpoint-down": ("ion", {"error_rate": 1, "statuses": [503], "only_paths": ["/realms"]}),
}
OUT = Path("/tmp/ionqbo-reliability/outages-defaults.json")


def _sync(env_file: Path) -> tuple[int, float, str, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SPECS}}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ionqbo", "sync", "--json", "--env-file", str(env_file)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    seconds = time.monotonic() - started
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = {}
    return proc.returncode, seconds, proc.stderr, report


def run_one(name: str) -> dict[str, Any]:
    side, faults = FAULTS[name]
    box = Sandbox().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            values = box.env()
            values["IONQBO_STATE_DIR"] = str(Path(tmp) / "state")
            env_file = Path(tmp) / "outage.env"
            env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
            first = _sync(env_file)
            assert first[0] == 3, first[2]
            box.ion.update_line(1042, 5001, {"quantity": 31, "totalCost": 1317.5})
            emulator = box.qbo if side == "qbo" else box.ion
            if name == "qbo-token-endpoint-down":
                box.qbo.expire_access_tokens()
                box.qbo.configure(faults_on_token=True)
            emulator.faults.configure(**faults)
            code, seconds, stderr, report = _sync(env_file)
            emulator.faults.clear()
            box.qbo.configure(faults_on_token=False)
            after = _sync(env_file)
            docs = [str(p["DocNumber"]) for p in box.qbo.dump()["PurchaseOrder"]]
            errors = [line for line in stderr.splitlines() if line.startswith("error:")]
            return {"fault": name, "exit_code": code, "seconds": round(seconds, 1),
                    "recorded_seconds": report.get("duration_seconds"), "error": errors[0] if errors else "",
                    "error_lines": len(errors), "next_run_exit_code": after[0],
                    "duplicates": len(docs) - len(set(docs))}
    finally:
        box.stop()


def main(argv: list[str]) -> int:
    names = argv or sorted(FAULTS)
    results = []
    for name in names:
        result = run_one(name)
        results.append(result)
        print(f"| {name} | {result['seconds']} | {result['exit_code']} | {result['error'][:160]} | "
              f"next run: exit {result['next_run_exit_code']}, {result['duplicates']} duplicates |", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
