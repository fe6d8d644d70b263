"""Fault suite: about 10% of requests to each emulator fail at random, and repeated syncs converge.

Faults (seeded, so a failure replays): 500, 502, 503 and 429 (QBO's XML throttle body; ION's JSON
with Retry-After), dropped connections, and answers slower than the client's timeout (1 s here; the
QBO emulator does the write before it stalls, so the client must not write twice). On top: QBO
access tokens live 2 s (they expire mid-run), refresh tokens rotate strictly (the old one dies once
the new one is used), the token endpoint is faulted too, and ION tokens live 3 s.

Each run must exit 0 (converged), 3 (some records queued) or 5 (a service stayed down); never 1.
After every run QBO holds no duplicate; in the end QBO holds exactly what ION says. A service that
stays down gives exit 5 and loses nothing. Figures: /tmp/ionqbo-reliability/faults.json.

QBO is the lenient one (a second PO with a DocNumber in use is accepted), so no duplicate means
ionqbo looked before it created; and the duplicate refusals QBO sent (6140, 6240) must be 0. The
figures (duplicates_found, records_lost) are counted from what the emulators hold.
"""

from __future__ import annotations

import collections
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conftest import QBO_MODES, duplicates, duplicates_found, make_env, refusals

SEED = 4242
COUNT = 60
FIGURES = Path("/tmp/ionqbo-reliability")
FAULTS = {"error_rate": 0.06, "statuses": [500, 502, 503, 429], "drop_rate": 0.02, "slow_rate": 0.02,
          "slow_seconds": 1.6}


def _add(box: Any, i: int) -> None:
    box.ion.add_part({"id": 200000 + i, "partNumber": f"FT-{i:03d}", "revision": "B",
                      "description": f"fault part {i}", "cost": 2.5, "isLatestRevision": True})
    box.ion.add_purchase_order({
        "id": 6000 + i, "status": "ORDERED", "supplierId": 2, "currencyId": 1,
        "purchaseOrderLines": [
            {"id": 61000 + i, "partId": 200000 + i, "quantity": 1 + i % 4, "unitCost": 2.5,
             "totalCost": 2.5 * (1 + i % 4)},
            {"id": 62000 + i, "quantity": 1, "unitCost": 99, "totalCost": 99, "expenseCode": "6100",
             "description": "fixture"}],
        "fees": [{"id": 63000 + i, "name": "Shipping", "value": 7}],
    })


def _change(box: Any, rng: random.Random, writes: collections.Counter[str]) -> None:
    """A wave of ION edits: 40 quantities change, 10 part descriptions change, 10 new POs with new parts."""
    ion = box.ion.dump()
    ours = sorted(int(p["id"]) for p in ion["purchaseOrders"] if int(p["id"]) >= 6000)
    for po_id in rng.sample(ours, 40):
        line = next(p for p in ion["purchaseOrders"] if int(p["id"]) == po_id)["purchaseOrderLines"][0]
        qty = int(Decimal(str(line["quantity"]))) % 9 + 1
        box.ion.update_line(po_id, line["id"], {"quantity": qty, "totalCost": 2.5 * qty})
        writes[str(po_id)] += 1
    for part_id in rng.sample(sorted(int(p["id"]) for p in ion["parts"] if int(p["id"]) >= 200000), 10):
        box.ion.update_part(part_id, {"description": f"fault part {part_id - 200000}, edited {rng.random():.6f}"})
    for i in range(ours[-1] - 6000 + 1, ours[-1] - 6000 + 11):
        _add(box, i)


def _missing(box: Any) -> list[str]:
    """ION records of this suite QBO lacks: POs without a QBO PO of that DocNumber, parts without their item."""
    dump, ion = box.qbo.dump(), box.ion.dump()
    docs = {str(p.get("DocNumber")) for p in dump["PurchaseOrder"]}
    names = {str(i.get("Name")) for i in dump["Item"]}
    return ([f"purchase_order:{p['id']}" for p in ion["purchaseOrders"]
             if int(p["id"]) >= 6000 and str(p["id"]) not in docs]
            + [f"part:{p['id']}" for p in ion["parts"]
               if int(p["id"]) >= 200000 and f"{p['partNumber']} Rev B" not in names])


def _check_books(box: Any, writes: collections.Counter[str]) -> None:
    """QBO holds exactly what ION says: every PO once with its lines, every part's item, nothing else."""
    dump, ion = box.qbo.dump(), box.ion.dump()
    pos = {str(p["DocNumber"]): p for p in dump["PurchaseOrder"]}
    ours = {str(p["id"]): p for p in ion["purchaseOrders"] if int(p["id"]) >= 6000}
    assert set(pos) == {"1042", "1043", "1044", "1045"} | set(ours)
    assert len(dump["PurchaseOrder"]) == len(pos)
    items = {i["Id"]: i for i in dump["Item"]}
    parts = {str(p["id"]): p for p in ion["parts"] if int(p["id"]) >= 200000}
    assert len(items) == 5 + len(parts)
    for doc, ion_po in ours.items():
        po, ion_line = pos[doc], ion_po["purchaseOrderLines"][0]
        part = parts[str(ion_line["partId"])]
        assert po["VendorRef"]["value"] == "42"
        item_line, expense_line, fee_line = po["Line"][:3]
        item = items[item_line["ItemBasedExpenseLineDetail"]["ItemRef"]["value"]]
        assert item["Name"] == f"{part['partNumber']} Rev B"
        assert item["Description"] == part["description"]
        assert Decimal(str(item_line["ItemBasedExpenseLineDetail"]["Qty"])) == Decimal(str(ion_line["quantity"]))
        assert Decimal(str(item_line["Amount"])) == Decimal(str(ion_line["totalCost"]))
        assert expense_line["AccountBasedExpenseLineDetail"]["AccountRef"]["value"] == "90"
        assert Decimal(str(fee_line["Amount"])) == 7
        assert po["SyncToken"] == str(writes[doc]), f"PO {doc}: SyncToken {po['SyncToken']}, meant {writes[doc]}"
    assert not dump.get("deleted")


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", ["lenient"], indirect=True)
def test_random_faults_on_both_sides_converge_without_duplicates(sandbox: Any, tmp_path: Path) -> None:
    box = sandbox
    env = make_env(box, tmp_path, IONQBO_HTTP_TIMEOUT="1", IONQBO_THROTTLE_WAIT="0.1", IONQBO_PAGE_SIZE="10")
    box.qbo.load({"Account": [{"Name": "Calibration Services", "AcctNum": "7777", "AccountType": "Expense",
                               "AccountSubType": "OtherMiscellaneousServiceCost"}]})
    for i in range(COUNT):
        _add(box, i)
    box.ion.token_lifetime = 3.0
    box.qbo.configure(access_token_lifetime=2, refresh_grace=0, faults_on_token=True)
    box.ion.faults.configure(**FAULTS, seed=SEED)
    box.qbo.faults.configure(**FAULTS, seed=SEED + 1)
    rng = random.Random(SEED)
    writes: collections.Counter[str] = collections.Counter()

    codes: list[list[int]] = []
    requests = {"ion": 0, "qbo": 0}
    most_duplicates = 0  # the most QBO held after any run
    for wave in range(40):
        if wave:
            _change(box, rng, writes)
        codes.append([])
        for _ in range(15):
            run = env.run("sync", "--json", timeout=300)
            codes[-1].append(run.code)
            assert run.code in (0, 3, 5), run.stderr[-3000:]
            assert "Traceback" not in run.stderr
            most_duplicates = max(most_duplicates, duplicates_found(box))
            assert most_duplicates == 0 and refusals(box) == 0, (duplicates(box), box.qbo.counters)
            requests["ion"] += run.json()["requests"]["ion"]
            requests["qbo"] += run.json()["requests"]["qbo"]
            if run.code == 0:
                break
        assert codes[-1][-1] == 0, (codes, run.stderr[-3000:])
        _check_books(box, writes)
        if sum(box.ion.faults.injected.values()) + sum(box.qbo.faults.injected.values()) >= 100:
            break
    injected = {"ion": dict(box.ion.faults.injected), "qbo": dict(box.qbo.faults.injected)}
    refreshes, refused = box.qbo.counters["token"], refusals(box)
    box.ion.faults.clear()
    box.qbo.faults.clear()
    box.qbo.reset_counters()
    again = env.run("sync", "--json")
    assert again.code == 0, again.stderr
    assert box.qbo.counters["writes"] == 0
    _check_books(box, writes)
    figures = {"seed": SEED, "purchase_orders": len(box.ion.dump()["purchaseOrders"]), "waves": len(codes),
               "exit_codes_per_wave": codes, "requests_sent": requests, "qbo_token_refreshes": refreshes, "faults_injected": injected,
               "faults_total": sum(sum(v.values()) for v in injected.values()),
               "duplicates_found": max(most_duplicates, duplicates_found(box)),
               "records_lost": len(_missing(box)), "duplicate_refusals": refused + refusals(box)}
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "faults.json").write_text(json.dumps(figures, indent=2))
    print("fault figures:", json.dumps(figures))
    assert (figures["duplicates_found"], figures["records_lost"], figures["duplicate_refusals"]) == (0, 0, 0)
    assert figures["faults_total"] >= 60
    assert sum(injected["qbo"].values()) >= 20
    assert refreshes >= 5  # access tokens expired mid-run and refresh tokens rotated


@pytest.mark.parametrize("sandbox", QBO_MODES, indirect=True)
@pytest.mark.parametrize("side", ["ion", "qbo"])
def test_a_service_that_stays_down_gives_5_and_loses_nothing(sandbox: Any, tmp_path: Path, side: str) -> None:
    env = make_env(sandbox, tmp_path, IONQBO_HTTP_TIMEOUT="1", IONQBO_THROTTLE_WAIT="0.1", IONQBO_MAX_RETRIES="2")
    sandbox.qbo.load({"Account": [{"Name": "Calibration Services", "AcctNum": "7777", "AccountType": "Expense",
                                   "AccountSubType": "OtherMiscellaneousServiceCost"}]})
    assert env.run("sync").code == 0
    sandbox.ion.add_purchase_order({
        "id": 6500, "status": "ORDERED", "supplierId": 1, "currencyId": 1,
        "purchaseOrderLines": [{"id": 65000, "partId": 10, "quantity": 2, "unitCost": 42.5, "totalCost": 85}]})
    emulator = getattr(sandbox, side)
    emulator.faults.configure(error_rate=1.0, statuses=[503])
    down = env.run("sync", "--json")
    assert down.code == 5, down.stderr
    report = down.json()
    assert report["exit_code"] == 5 and report["ok"] is False
    assert "503" in down.stderr or "unavailable" in down.stderr.lower()
    assert len(down.stderr.strip().splitlines()[-1]) < 400  # one line, no traceback
    assert "Traceback" not in down.stderr
    emulator.faults.clear()
    up = env.run("sync", "--json")
    assert up.code == 0, up.stderr
    docs = collections.Counter(str(p["DocNumber"]) for p in sandbox.qbo.dump()["PurchaseOrder"])
    assert docs["6500"] == 1
    assert duplicates_found(sandbox) == 0 and refusals(sandbox) == 0
