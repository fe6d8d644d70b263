"""Crash suite: a sync of 200 POs with 200 new parts, SIGKILLed again and again at chosen requests.

The emulators sit behind a tap (an App wrapper) that counts every request of the running sync and
kills it at the chosen one: either *answer lost* (the emulator did the work, e.g. wrote the batch or
rotated the refresh token, and the process dies before it reads the answer) or *after the answer*
(the process read the answer and is killed when it sends its next request: for a QBO batch, that is
between the write and the state save). Each restart is killed one request later than the one before,
so the kills walk over the whole run; every few restarts the QBO access token is expired first and
the kill lands on the token refresh. After each kill the state file must load and QBO must hold no
duplicate; when a restart reaches its end, a last run checks the books: one QBO PO per ION PO with the
right content, one item per part, nothing else written.

QBO is the lenient one (it accepts a second PO with a DocNumber in use, a reading of QBO's rule the
public evidence cannot rule out), so only ionqbo's own lookups keep a second PO out; item names stay
unique in QBO, and the duplicate refusals it sends (6140, 6240) must be 0: ionqbo never even tried.
The cursor overlap is 0 and ION's clock runs hours behind, so a cursor saved too early loses records.
The figures (duplicates_found, records_lost) are counted from what the emulators hold at the end.

Replay: the kill schedule is fixed by ``SEED``; figures go to /tmp/ionqbo-reliability/crash.json.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ionqbo.sandbox.httpd import App, Request, Response

from conftest import ION_LAG, Env, duplicates, duplicates_found, make_env, refusals

SEED = 20261125
COUNT = 200
FIGURES = Path("/tmp/ionqbo-reliability")
SAMPLE_DOCS = {"1042", "1043", "1044", "1045"}


def _label(service: str, request: Request) -> str:
    """What a request is, for the kill log: ``qbo:batch``, ``ion:PurchaseOrders``, ``qbo:token``..."""
    path = request.path
    if "token" in path:
        return f"{service}:token"
    if service == "ion":
        try:
            return f"ion:{request.json().get('operationName') or 'graphql'}"
        except (ValueError, AttributeError):
            return "ion:graphql"
    rest = path.split("/")[4:] if path.startswith("/v3/company/") else [path]
    return f"qbo:{rest[0] if rest else '?'}"


@dataclass
class Spec:
    """Where to kill: request number ``at`` of the run, or the first request labelled ``label``."""

    mode: str  # "answer-lost" | "after-answer"
    at: int = 0
    label: str = ""
    nth: int = 1  # with label: the nth request so labelled


@dataclass
class Killer:
    """Counts the requests of the running sync and SIGKILLs it at the chosen one."""

    proc: subprocess.Popen[str] | None = None
    spec: Spec | None = None
    count: int = 0
    pending: str = ""  # an after-answer kill waits for the next request; this is what it follows
    killed: str = ""
    seen: list[str] = field(default_factory=list)
    token_answer: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, proc: subprocess.Popen[str], spec: Spec | None) -> None:
        with self.lock:
            self.proc, self.spec, self.count, self.pending, self.killed = proc, spec, 0, "", ""
            self.seen, self.token_answer = [], {}

    def disarm(self) -> None:
        with self.lock:
            self.proc, self.spec, self.pending = None, None, ""

    def _kill(self, why: str) -> None:
        assert self.proc is not None
        self.killed = why  # first: the test thread sees the pipes close as soon as the process dies
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)  # dead before this thread answers anything

    def wrap(self, service: str, app: App) -> App:
        def handle(request: Request) -> Response:
            if request.path.startswith("/_admin/"):
                return app(request)
            label = _label(service, request)
            with self.lock:
                if self.proc is None:
                    return app(request)
                if self.killed:
                    return Response(drop=True)
                self.count += 1
                number = self.count
                self.seen.append(label)
                nth = self.seen.count(label)
                if self.pending:
                    self._kill(f"after-answer:{self.pending}")
                    return Response(drop=True)
                spec = self.spec
                hit = spec is not None and ((spec.at and number == spec.at)
                                            or (spec.label == label and spec.nth == nth))
                if hit and spec is not None:
                    self.spec = None
            response = app(request)
            with self.lock:
                if label == "qbo:token" and response.status == 200:
                    self.token_answer = json.loads(response.body)
                if hit and spec is not None:
                    where = f"{label}#{number}"
                    if spec.mode == "answer-lost":
                        self._kill(f"answer-lost:{where}")
                    else:
                        self.pending = where
            return response

        return handle


@dataclass
class Rig:
    env: Env
    box: Any
    killer: Killer


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    from ionqbo.sandbox.server import Sandbox

    box = Sandbox(sample=True, multicurrency=True, ion_lag=ION_LAG, allow_duplicate_docnumbers=True)
    killer = Killer()
    # The sandbox's own servers, with the tap in front of each emulator.
    box.start(tap=killer.wrap)
    try:
        env = make_env(box, tmp_path, IONQBO_PAGE_SIZE="20")
        box.qbo.load({"Account": [{"Name": "Calibration Services", "AcctNum": "7777", "AccountType": "Expense",
                                   "AccountSubType": "OtherMiscellaneousServiceCost"}]})
        for i in range(COUNT):
            _add(box, i)
        yield Rig(env, box, killer)
    finally:
        box.stop()


def _no_duplicates(box: Any) -> None:
    found = duplicates(box)
    assert found == {"purchase_orders": {}, "items_by_name": {}, "items_by_sku": {}, "deleted": {}}, found
    assert refusals(box) == 0, box.qbo.counters  # ionqbo never sent a create QBO had to refuse


def _missing(box: Any) -> list[str]:
    """ION records QBO lacks (counted from both emulators): POs of this suite without a QBO PO of
    that DocNumber, parts without their item."""
    dump, ion = box.qbo.dump(), box.ion.dump()
    docs = {str(p.get("DocNumber")) for p in dump["PurchaseOrder"]}
    names = {str(i.get("Name")) for i in dump["Item"]}
    return ([f"purchase_order:{p['id']}" for p in ion["purchaseOrders"]
             if int(p["id"]) >= 5000 and str(p["id"]) not in docs]
            + [f"part:{p['id']}" for p in ion["parts"]
               if int(p["id"]) >= 100000 and f"{p['partNumber']} Rev A" not in names])


def _state_is_valid(env: Env) -> dict[str, Any]:
    from ionqbo.state import StateStore

    path = env.state_dir / "state.json"
    if path.exists():
        state = StateStore(path).load()  # raises StateError on a torn or invalid file
        for key in state.ledger:  # and the ledger's SQLite file reads whole
            assert state.ledger[key].qbo_id
        leftovers = [p.name for p in env.state_dir.iterdir() if p.name.startswith("state.json.")]
        return {"temp_files": leftovers}
    return {}


def _check_books(box: Any, rewrites: collections.Counter[str]) -> None:
    """QBO matches ION exactly: one PO per ION PO with the right content and status, one item per part
    with the right description, nothing else; ``rewrites`` says how often each PO was meant to change."""
    dump, ion = box.qbo.dump(), box.ion.dump()
    items = {i["Id"]: i for i in dump["Item"]}
    by_name = collections.Counter(i["Name"] for i in items.values())
    assert all(n == 1 for n in by_name.values())
    parts = {str(p["id"]): p for p in ion["parts"] if int(p["id"]) >= 100000}
    missing = sorted(pid for pid, p in parts.items() if f"{p['partNumber']} Rev A" not in by_name)
    assert missing == [], f"parts without a QBO item: {missing}"
    for part in parts.values():
        item = next(i for i in items.values() if i["Name"] == f"{part['partNumber']} Rev A")
        assert item["Sku"] == part["partNumber"]
        assert item["Description"] == part["description"]
    assert len(by_name) == len(parts) + 5  # and the sample's five parts: no orphan item
    pos = {str(p["DocNumber"]): p for p in dump["PurchaseOrder"]}
    ours = {str(p["id"]): p for p in ion["purchaseOrders"] if int(p["id"]) >= 5000}
    assert len(pos) == len(dump["PurchaseOrder"]) == len(ours) + len(SAMPLE_DOCS)
    assert set(pos) == SAMPLE_DOCS | set(ours)
    for doc, ion_po in ours.items():
        po, ion_line = pos[doc], ion_po["purchaseOrderLines"][0]
        assert po["VendorRef"]["value"] == "41"
        assert po.get("POStatus", "Open") == ("Closed" if ion_po["status"] == "CANCELED" else "Open")
        item_line, fee_line = po["Line"][0], po["Line"][1]
        detail = item_line["ItemBasedExpenseLineDetail"]
        part = parts[str(ion_line["partId"])]
        assert items[detail["ItemRef"]["value"]]["Name"] == f"{part['partNumber']} Rev A"
        assert Decimal(str(detail["Qty"])) == Decimal(str(ion_line["quantity"]))
        assert Decimal(str(item_line["Amount"])) == Decimal(str(ion_line["totalCost"]))
        assert Decimal(str(fee_line["Amount"])) == 5
        assert fee_line["AccountBasedExpenseLineDetail"]["AccountRef"]["value"] == "92"
        assert po["SyncToken"] == str(rewrites[doc]), f"PO {doc}: SyncToken {po['SyncToken']}, {rewrites[doc]} meant"


def _add(box: Any, i: int) -> None:
    box.ion.add_part({"id": 100000 + i, "partNumber": f"CR-{i:04d}", "revision": "A",
                      "description": f"crash part {i}", "cost": 1.25, "isLatestRevision": True})
    box.ion.add_purchase_order({
        "id": 5000 + i, "status": "ORDERED", "supplierId": 1, "currencyId": 1,
        "purchaseOrderLines": [{"id": 60000 + i, "partId": 100000 + i, "quantity": 1 + i % 7,
                                "unitCost": 1.25, "totalCost": 1.25 * (1 + i % 7)}],
        "fees": [{"id": 70000 + i, "name": "Shipping", "value": 5}],
    })


def _change(box: Any, rng: random.Random, wave: int, rewrites: collections.Counter[str]) -> None:
    """A later wave: quantities change, part descriptions change, a few POs are canceled, new ones come."""
    ion = box.ion.dump()
    open_pos = sorted(int(p["id"]) for p in ion["purchaseOrders"] if int(p["id"]) >= 5000 and p["status"] == "ORDERED")
    changed = rng.sample(open_pos, 60)
    for po_id in changed:
        line = next(p for p in ion["purchaseOrders"] if int(p["id"]) == po_id)["purchaseOrderLines"][0]
        qty = int(Decimal(str(line["quantity"]))) % 9 + 1
        box.ion.update_line(po_id, line["id"], {"quantity": qty, "totalCost": 1.25 * qty})
        rewrites[str(po_id)] += 1
    for part_id in rng.sample(sorted(int(p["id"]) for p in ion["parts"] if int(p["id"]) >= 100000), 30):
        box.ion.update_part(part_id, {"description": f"crash part {part_id - 100000}, wave {wave}"})
    for po_id in rng.sample(sorted(set(open_pos) - set(changed)), 5):  # a canceled PO is closed, not edited
        box.ion.update_purchase_order(po_id, {"status": "CANCELED"})
        rewrites[str(po_id)] += 1
    first = max(int(p["id"]) for p in ion["purchaseOrders"]) - 5000 + 1
    for i in range(first, first + 20):
        _add(box, i)


def _next_spec(rng: random.Random, kill_no: int, at: int) -> Spec:
    """Walk the run one request at a time; every third kill lands on a QBO batch write, every sixth
    on a token refresh."""
    mode = "answer-lost" if kill_no % 2 == 0 else "after-answer"
    if kill_no % 6 == 5:
        return Spec(mode=rng.choice(["answer-lost", "after-answer"]), label="qbo:token")
    if kill_no % 3 == 1:
        return Spec(mode=mode, label="qbo:batch", nth=rng.randint(1, 4))
    return Spec(mode=mode, at=at)


def _kill_until_done(env: Env, box: Any, killer: Killer, rng: random.Random, kills: list[str], at: int) -> None:
    """Restart the sync, killing each run at the next point (from request ``at`` on), until one run
    reaches its end."""
    for kill_no in range(300):
        spec = _next_spec(rng, kill_no, at)
        if spec.label == "qbo:token":
            box.qbo.expire_access_tokens()  # the next QBO call answers 401 and the token is refreshed
        elif not spec.label:
            at += 1
        proc = env.popen("sync", "--json")
        killer.arm(proc, spec)
        _stdout, stderr = proc.communicate(timeout=120)
        killer.disarm()
        if not killer.killed:
            assert proc.returncode == 0, stderr  # the run reached its end
            assert "Traceback" not in stderr
            return
        kills.append(killer.killed)
        _state_is_valid(env)
        _no_duplicates(box)
        if killer.killed.startswith("after-answer:qbo:token"):
            # the rotated refresh token was stored before the new access token was used
            store = json.loads((env.state_dir / "qbo-tokens.json").read_text())
            assert store["refresh_token"] == killer.token_answer["refresh_token"]
    raise AssertionError("the sync never ran to its end")


@pytest.mark.slow
def test_sigkill_at_many_points_leaves_exact_books(rig: Rig) -> None:
    env, box, killer = rig.env, rig.box, rig.killer
    rng = random.Random(SEED)
    kills: list[str] = []
    rewrites: collections.Counter[str] = collections.Counter()
    waves = []
    # wave 1: 200 new POs, each with a new part (added by the fixture); later waves change things
    for wave in range(1, 16):
        if wave > 1:
            _change(box, rng, wave, rewrites)
        before = len(kills)
        _kill_until_done(env, box, killer, rng, kills, at=1 if wave == 1 else rng.randint(2, 16))
        waves.append(len(kills) - before)
        _check_books(box, rewrites)
        if len(set(kills)) >= 45:
            break

    refused = refusals(box)
    box.qbo.reset_counters()
    last = env.run("sync", "--json")
    assert last.code == 0, last.stderr
    assert box.qbo.counters["writes"] == 0
    _check_books(box, rewrites)
    assert _state_is_valid(env) == {"temp_files": []}
    status = env.run("status", "--json").json()
    assert status["queue"] == []

    distinct = sorted(set(kills))
    figures = {
        "purchase_orders": len(box.ion.dump()["purchaseOrders"]) - 5, "first_wave_new_pos_with_new_parts": COUNT,
        "seed": SEED, "waves": len(waves), "kills_per_wave": waves,
        "kills": len(kills), "distinct_kill_points": len(distinct),
        "kills_on_qbo_batch_writes": sum(":qbo:batch#" in k for k in kills),
        "kills_between_write_and_state_save": sum(k.startswith("after-answer:qbo:batch") for k in kills),
        "kills_with_write_done_answer_lost": sum(k.startswith("answer-lost:qbo:batch") for k in kills),
        "kills_during_token_refresh": sum(":qbo:token#" in k for k in kills),
        "duplicates_found": duplicates_found(box), "records_lost": len(_missing(box)),
        "duplicate_refusals": refused + refusals(box), "kill_points": kills,
    }
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "crash.json").write_text(json.dumps(figures, indent=2))
    print("crash figures:", json.dumps({k: v for k, v in figures.items() if k != "kill_points"}))
    assert (figures["duplicates_found"], figures["records_lost"], figures["duplicate_refusals"]) == (0, 0, 0)
    assert len(distinct) >= 30
    assert figures["kills_between_write_and_state_save"] >= 3
    assert figures["kills_with_write_done_answer_lost"] >= 3
    assert figures["kills_during_token_refresh"] >= 2
