"""End to end: the real CLI against the ION emulator serving each shipped schema variant.

Each variant (``ionqbo/sandbox/ion-schemas/*.graphql``) differs from the reference schema in one way
public First Resonance material leaves open. Against every one, either ``ionqbo sync`` writes to QBO
exactly what it writes against the reference schema with no setting, or ``check-mappings`` names the
one setting that makes it so (and blocks the sync until it is given), and with it, it does. Then one
PO is canceled and a line of another changed in ION: the next run (incremental, from the stored
cursor or by _etag scan) must bring QBO to the same state as it does against the reference schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ionqbo.sandbox.server import Sandbox

from conftest import Env, make_env

VARIANTS = Path(__file__).resolve().parents[1] / "ionqbo" / "sandbox" / "ion-schemas"
VOLATILE = {"Id", "SyncToken", "MetaData", "sparse", "domain", "TxnDate"}


def variants() -> list[Any]:
    return [pytest.param(p, id=p.stem) for p in sorted(VARIANTS.glob("*.graphql"))]


def expectation(path: Path) -> str:
    match = re.search(r"^# expect: (.+)$", path.read_text(encoding="utf-8"), re.M)
    assert match, f"{path.name} has no '# expect:' line"
    return match[1].strip()


def _clean(value: Any, items: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            if key in VOLATILE:
                continue
            if key == "ItemRef" and isinstance(sub, dict):
                out[key] = items.get(str(sub.get("value")), sub.get("name"))
                continue
            out[key] = _clean(sub, items)
        return out
    if isinstance(value, list):
        return [_clean(v, items) for v in value]
    return value


def books(box: Sandbox) -> dict[str, Any]:
    """What ionqbo wrote to QBO, without ids, tokens or times (they differ between runs)."""
    dump = box.qbo.dump()
    items = {str(i["Id"]): i["Name"] for i in dump["Item"]}
    pos = sorted((p for p in dump["PurchaseOrder"] if p.get("status") != "Deleted"), key=lambda p: p["DocNumber"])
    return {"PurchaseOrder": [_clean(p, items) for p in pos],
            "Item": sorted((_clean(i, items) for i in dump["Item"]), key=lambda i: i["Name"])}


def change_ion(box: Sandbox) -> None:
    """A change a person makes in ION between two runs: cancel 1042, order one more of 1043's first line."""
    box.ion.update_purchase_order(1042, {"status": "CANCELED"})
    po = next(p for p in box.ion.dump()["purchaseOrders"] if p["id"] == 1043)
    line = po["purchaseOrderLines"][0]
    box.ion.update_line(1043, line["id"], {"quantity": line["quantity"] + 1,
                                           "totalCost": (line["quantity"] + 1) * line["unitCost"]})


def run_twice(env: Env) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    reports = []
    first = env.run("sync", "--json")
    assert first.stdout.strip().startswith("{"), first.stderr
    reports.append(first.json())
    before = books(env.box)
    change_ion(env.box)
    second = env.run("sync", "--json")
    assert second.stdout.strip().startswith("{"), second.stderr
    reports.append(second.json())
    return [before, books(env.box)], reports


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Any], list[Any]]]:
    with Sandbox(sample=True, multicurrency=True) as box:
        env = make_env(box, tmp_path_factory.mktemp("reference"))
        yield run_twice(env)


def _failures(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted((f["kind"], f["ion_id"], f["code"]) for f in report["failures"])


@pytest.mark.parametrize("path", variants())
def test_each_variant_syncs_as_the_reference_does(path: Path, tmp_path: Path,
                                                  reference: tuple[list[Any], list[Any]]) -> None:
    expect = expectation(path)
    ref_books, ref_reports = reference
    with Sandbox(sample=True, multicurrency=True, ion_schema=path) as box:
        env = make_env(box, tmp_path)
        checked = env.run("check-mappings", "--json")
        report = checked.json()
        schema_rows = report["sections"]["ION schema"]
        blocking = [r for r in schema_rows if r["severity"] == "blocking"]
        if expect.startswith("setting "):
            key, _, field = expect.removeprefix("setting ").partition(" = ")
            assert checked.code == 2, checked.stdout
            assert [r["subject"] for r in blocking] == [key]  # one setting, named
            assert f'[ion_fields] "{key}"' in blocking[0]["fix"]
            # Without the setting the sync stops before anything is written.
            stopped = env.run("sync", "--json")
            assert stopped.code == 2, stopped.stdout
            assert key.split(".")[1].lower()[:7] in stopped.stderr.lower().replace(" ", "")
            assert box.qbo.counters["writes"] == 0
            mappings = tmp_path / "mappings.toml"
            mappings.write_text(f'[ion_fields]\n"{key}" = "{field}"\n', encoding="utf-8")
            env.set(IONQBO_MAPPINGS=str(mappings))
            checked = env.run("check-mappings", "--json")
            report = checked.json()
            schema_rows = report["sections"]["ION schema"]
            blocking = [r for r in schema_rows if r["severity"] == "blocking"]
            found = next(r for r in schema_rows if r["subject"] == key)
            assert found["severity"] == "ok" and "(set in [ion_fields])" in found["message"]
        assert blocking == [], blocking
        got_books, reports = run_twice(env)
        for got, ref in zip(reports, ref_reports, strict=True):
            assert got["exit_code"] == ref["exit_code"], got
            assert _failures(got) == _failures(ref)
            for kind in ("purchase_orders", "parts"):
                # `unchanged` may differ: an _etag scan does not even read what did not change.
                wrote = {k: v for k, v in got[kind].items() if k != "unchanged"}
                assert wrote == {k: v for k, v in ref[kind].items() if k != "unchanged"}, (kind, got[kind], ref[kind])
        if expect == "sync-with-warnings":
            # Not the same books: what this ION does not have is named, once, in the report.
            notes = reports[0]["ion_schema"]
            for what in ("notes", "ship-to postal code", "part's cost", "unit of measure", "currency name"):
                assert sum(what in n for n in notes) == 1, (what, notes)
            assert len(reports[1]["ion_schema"]) == len(notes)
            assert [p["DocNumber"] for p in got_books[1]["PurchaseOrder"]] == \
                [p["DocNumber"] for p in ref_books[1]["PurchaseOrder"]]
            assert all("ShipAddr" not in p for p in got_books[1]["PurchaseOrder"])
        else:
            assert got_books == ref_books
            assert [n for n in reports[0]["ion_schema"] if "ION has no field" in n] == []


def test_the_reference_run_really_changed_qbo(reference: tuple[list[Any], list[Any]]) -> None:
    """The comparison above is only worth something if the second run did write the change."""
    (before, after), (_first, second) = reference
    assert second["purchase_orders"]["closed"] == 1
    assert second["purchase_orders"]["updated"] == 1
    assert before != after
    assert {p["DocNumber"]: p.get("POStatus") for p in after["PurchaseOrder"]}["1042"] == "Closed"


def test_saved_schema_is_served_back(env: Env, tmp_path: Path) -> None:
    """`check-mappings --save-ion-schema FILE` writes SDL that `ionqbo sandbox --ion-schema FILE` serves."""
    saved = tmp_path / "saved.graphql"
    run = env.run("check-mappings", "--save-ion-schema", str(saved))
    assert "saved to" in run.stderr
    text = saved.read_text(encoding="utf-8")
    assert "type PurchaseOrderLine" in text and "ORDERED" in text
    assert "Acme" not in text  # a schema, no data
    with Sandbox(sample=True, ion_schema=saved) as box:
        (tmp_path / "again").mkdir()
        again = make_env(box, tmp_path / "again")
        assert again.run("check-mappings", "--json").json()["sections"]["ION schema"]
        synced = again.run("sync", "--json")
        assert synced.json()["purchase_orders"]["created"] == 3
