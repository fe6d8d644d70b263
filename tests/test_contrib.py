"""Checks on the scheduling files in contrib/: systemd units, the cron line, the Kubernetes CronJob."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
SYSTEMD = CONTRIB / "systemd"
SERVICES = ["ionqbo.service", "ionqbo@.service"]
TIMERS = ["ionqbo.timer", "ionqbo@.timer"]

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """Parse a unit file into section -> key -> values (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in (SYSTEMD / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{name}: not a key=value line: {raw!r}"
        assert current is not None, f"{name}: key outside a section: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.mark.parametrize("name", SERVICES)
def test_service_runs_oneshot_sync_with_hardening(name):
    service = _unit(name)["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["User"] == ["ionqbo"]
    (exec_start,) = service["ExecStart"]
    assert exec_start.startswith("/usr/local/bin/ionqbo sync --env-file /etc/ionqbo/")
    assert set(service["SuccessExitStatus"][0].split()) == {"3", "75"}
    for key, value in HARDENING.items():
        assert service.get(key) == [value], f"{name}: {key} should be {value!r}"
    state_dir = service["Environment"][0].removeprefix("IONQBO_STATE_DIR=")
    assert service["ReadWritePaths"] == [state_dir]
    assert state_dir == "%S/" + service["StateDirectory"][0]


def test_template_keeps_companies_apart():
    service = _unit("ionqbo@.service")["Service"]
    assert service["ExecStart"][0].endswith("--env-file /etc/ionqbo/%i.env")
    assert service["StateDirectory"] == ["ionqbo/%i"]
    assert service["Environment"] == ["IONQBO_STATE_DIR=%S/ionqbo/%i"]


@pytest.mark.parametrize("name", TIMERS)
def test_timer_every_five_minutes(name):
    unit = _unit(name)
    timer = unit["Timer"]
    assert timer["OnCalendar"] == ["*:0/5"]
    assert timer["Persistent"] == ["true"]
    assert "OnBootSec" in timer
    delay = timer["RandomizedDelaySec"][0]
    assert re.fullmatch(r"\d+s", delay)
    assert int(delay[:-1]) <= 120
    assert unit["Install"]["WantedBy"] == ["timers.target"]


def test_systemd_analyze_verify(tmp_path):
    """systemd's own parser: unknown keys, bad values and a missing binary are reported."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart exists; point it at a binary that does. Templates are checked
    # through an instance (a template itself cannot be verified).
    copies = {
        "ionqbo.service": "ionqbo.service",
        "ionqbo.timer": "ionqbo.timer",
        "ionqbo@.service": "ionqbo@acme.service",
        "ionqbo@.timer": "ionqbo@acme.timer",
    }
    paths = []
    for source, target in copies.items():
        text = (SYSTEMD / source).read_text(encoding="utf-8").replace("/usr/local/bin/ionqbo", sys.executable)
        path = tmp_path / target
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    result = subprocess.run([tool, "verify", "--man=no", *paths], capture_output=True, text=True,
                            timeout=60, check=False)
    output = result.stdout + result.stderr
    if "Failed to initialize" in output or "Failed to connect" in output:
        pytest.skip(f"systemd-analyze cannot run here: {output.strip()[:200]}")
    # Only lines about our units count; the host may add notes about its own units.
    ours = [line for line in output.splitlines() if any(t in line for t in copies.values())]
    assert ours == [], "\n".join(ours)
    assert result.returncode == 0, output


def test_sysusers_declares_the_user():
    line = next(raw for raw in (SYSTEMD / "ionqbo.sysusers").read_text().splitlines()
                if raw.strip() and not raw.startswith("#"))
    assert line.split()[:2] == ["u", "ionqbo"]


def test_cron_line():
    lines = [raw for raw in (CONTRIB / "cron" / "ionqbo.cron").read_text().splitlines()
             if raw.strip() and not raw.startswith("#")]
    jobs = [line for line in lines if not re.match(r"^[A-Z_]+=", line)]
    assert len(jobs) == 1
    fields = jobs[0].split(None, 6)
    minute, hour, dom, month, dow, user, command = fields
    assert (minute, hour, dom, month, dow) == ("*/5", "*", "*", "*", "*")
    assert user == "ionqbo"
    argv = command.split()
    assert argv[:4] == ["flock", "-n", "-E", "75"]
    lock = argv[4]
    assert lock.endswith(".lock")
    assert not lock.endswith("/sync.lock")  # not ionqbo's own lock: it takes that one itself
    assert argv[5:8] == ["/usr/local/bin/ionqbo", "sync", "--env-file"]


MANIFEST = CONTRIB / "kubernetes" / "cronjob.yaml"


def test_cronjob_manifest_lines():
    text = MANIFEST.read_text(encoding="utf-8")
    for pattern in [
        r"^apiVersion: batch/v1$",
        r"^kind: CronJob$",
        r'^  schedule: "\*/5 \* \* \* \*"$',
        r"^  concurrencyPolicy: Forbid$",
        r"^\s+- secretRef:$",
        r"^\s+persistentVolumeClaim:$",
        r"^\s+runAsNonRoot: true$",
        r"^\s+readOnlyRootFilesystem: true$",
        r"^\s+allowPrivilegeEscalation: false$",
        r"^kind: PersistentVolumeClaim$",
    ]:
        assert re.search(pattern, text, re.MULTILINE), pattern
    assert "\t" not in text


def test_cronjob_manifest_structure():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (not an ionqbo dependency)")
    docs = [doc for doc in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    cron = by_kind["CronJob"]
    assert cron["apiVersion"] == "batch/v1"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == "*/5 * * * *"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "ionqbo-acme"}}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {item["name"]: item["value"] for item in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["state"] == env["IONQBO_STATE_DIR"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["state"]["persistentVolumeClaim"]["claimName"]
    assert by_kind["PersistentVolumeClaim"]["metadata"]["name"] == claim
    assert "ionqbo sync" in " ".join(container["args"])


def test_readme_mentions_every_file():
    readme = (CONTRIB / "README.md").read_text(encoding="utf-8")
    for path in sorted(p for p in CONTRIB.rglob("*") if p.is_file() and p.name != "README.md"):
        assert path.name in readme, path



def test_units_leave_time_for_sigterm_to_save() -> None:
    """SIGTERM ends a run within 10 s with its progress saved: SIGKILL must not come sooner."""
    root = Path(__file__).parents[1] / "contrib"
    for unit in ("systemd/ionqbo.service", "systemd/ionqbo@.service"):
        text = (root / unit).read_text()
        match = re.search(r"^TimeoutStopSec=(\d+)s$", text, re.MULTILINE)
        assert match and int(match.group(1)) >= 10, unit
    job = (root / "kubernetes/cronjob.yaml").read_text()
    match = re.search(r"terminationGracePeriodSeconds: (\d+)", job)
    assert match and int(match.group(1)) >= 10
