"""Bad-input corpus: malformed and hostile ION records, one JSON fixture each (tests/bad_input/).

All fixtures go into one sandbox at once, so each run also proves that a bad record does not stop
the good ones. The flow, run once for the module:

1. load every fixture (plus the QBO records some legitimate ones need), sync: exit 3;
2. per fixture, either the record synced as it should (a legitimate oddity: quotes, emoji, ...),
   or it failed with a specific per-record error naming the fix, and it is queued;
3. apply every fix (QBO side, explicit mappings, or ION where ION is the only place to fix it) and
   sync again: exit 0, every record where it belongs, no duplicates; a third run writes nothing.

Figures go to /tmp/ionqbo-reliability/bad_input.json (and are printed with ``-s``).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conftest import ION_LAG, Env, Run, duplicates_found, make_env, refusals

FIXTURES = sorted((Path(__file__).parent / "bad_input").glob("*.json"))
FIGURES = Path("/tmp/ionqbo-reliability")


def _load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal), file=path.name)


CASES = [_load(p) for p in FIXTURES]


@dataclass
class Corpus:
    env: Env
    first: Run
    first_dump: dict[str, Any]
    first_status: dict[str, Any]
    second: Run
    second_dump: dict[str, Any]
    third: Run
    third_writes: int
    duplicates: list[int] = field(default_factory=list)  # duplicates_found after each run
    refusals: int = 0  # duplicate refusals QBO sent over the three runs
    notes: list[str] = field(default_factory=list)


def _apply_ion(box: Any, op: dict[str, Any]) -> None:
    kind = op["op"]
    if kind == "update_line":
        box.ion.update_line(op["po"], op["line"], op["changes"])
    elif kind == "update_fee":
        box.ion.update_fee(op["po"], op["fee"], op["changes"])
    elif kind == "update_purchase_order":
        box.ion.update_purchase_order(op["po"], op["changes"])
    elif kind == "update_part":
        box.ion.update_part(op["part"], op["changes"])
    else:  # pragma: no cover - a fixture typo
        raise AssertionError(f"unknown fix op {kind}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    from ionqbo.sandbox.server import Sandbox

    box = Sandbox(sample=True, multicurrency=True, ion_lag=ION_LAG).start()
    try:
        tmp = tmp_path_factory.mktemp("bad_input")
        env = make_env(box, tmp)
        # The sample's one broken PO (expense code 7777) is fixed first, so the baseline is clean.
        box.qbo.load({"Account": [{"Name": "Calibration Services", "AcctNum": "7777", "AccountType": "Expense",
                                   "AccountSubType": "OtherMiscellaneousServiceCost"}]})
        for case in CASES:
            if case.get("qbo_setup"):
                box.qbo.load(case["qbo_setup"])
            for supplier in case.get("suppliers", []):
                box.ion.add_supplier(supplier)
            for currency in case.get("currencies", []):
                box.ion.load({**box.ion.dump(), "currencies": [*box.ion.dump()["currencies"], currency]})
            for part in case.get("parts", []):
                box.ion.add_part(part)
            if case.get("po"):
                box.ion.add_purchase_order(case["po"])
        first = env.run("sync", "--json")
        first_dump = box.qbo.dump()
        found = [duplicates_found(box)]
        first_status = env.run("status", "--json").json()

        mappings = ""
        for case in CASES:
            fix = case.get("fix") or {}
            if fix.get("qbo_load"):
                box.qbo.load(fix["qbo_load"])
            for op in fix.get("ion", []):
                _apply_ion(box, op)
            mappings += fix.get("mappings", "")
        if mappings:
            path = tmp / "mappings.toml"
            path.write_text(mappings, encoding="utf-8")
            env.set(IONQBO_MAPPINGS=str(path))
        second = env.run("sync", "--json")
        second_dump = box.qbo.dump()
        found.append(duplicates_found(box))
        refused = refusals(box)
        box.qbo.reset_counters()
        third = env.run("sync", "--json")
        found.append(duplicates_found(box))
        yield Corpus(env, first, first_dump, first_status, second, second_dump, third, box.qbo.counters["writes"],
                     duplicates=found, refusals=refused + refusals(box))
    finally:
        box.stop()


def _pos(dump: dict[str, Any], doc: str) -> list[dict[str, Any]]:
    return [p for p in dump.get("PurchaseOrder", []) if str(p.get("DocNumber")) == doc]


def _failures(run: Run) -> dict[tuple[str, str], dict[str, Any]]:
    return {(f["kind"], str(f["ion_id"])): f for f in run.json()["failures"]}


def _doc(case: dict[str, Any]) -> str:
    return str(case["po"]["id"])


def _check_content(case: dict[str, Any], dump: dict[str, Any]) -> None:
    check = case.get("check") or {}
    po = _pos(dump, check.get("po", _doc(case)))
    assert len(po) == 1, f"{case['file']}: {len(po)} QBO POs"
    lines = [ln for ln in po[0]["Line"] if ln.get("DetailType") != "SubTotalLineDetail"]
    if "lines" in check:
        assert len(lines) == check["lines"]
    if "line" in check:
        line = lines[check["line"]]
        detail = line.get("ItemBasedExpenseLineDetail") or {}
        if "Qty" in check:
            assert Decimal(str(detail["Qty"])) == Decimal(check["Qty"])
        if "Amount" in check:
            assert Decimal(str(line["Amount"])) == Decimal(check["Amount"])
            qty, price = Decimal(str(detail.get("Qty", 1))), Decimal(str(detail.get("UnitPrice", line["Amount"])))
            assert abs(qty * price - Decimal(str(line["Amount"]))) < Decimal("0.005")  # QBO's 6070 rule
    if "item" in check:
        items = {i["Id"]: i for i in dump["Item"]}
        names = [items[ln["ItemBasedExpenseLineDetail"]["ItemRef"]["value"]]["Name"] for ln in lines
                 if "ItemBasedExpenseLineDetail" in ln]
        assert check["item"] in names, names
    if "vendor" in check:
        assert po[0]["VendorRef"]["value"] == check["vendor"]


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert sum(c["expect"] == "fail" for c in CASES) >= 25
    assert sum(c["expect"] == "sync" for c in CASES) >= 10


def test_exit_codes_and_no_duplicates(corpus: Corpus) -> None:
    figures = _write_figures(corpus)
    # QBO refused no duplicate: ionqbo looked before every create (a refusal would hide a missing lookup)
    assert (figures["duplicates_found"], figures["records_lost"], figures["duplicate_refusals"]) == (0, 0, 0), figures
    assert corpus.first.code == 3, corpus.first.stderr
    assert corpus.second.code == 0, (corpus.second.stderr, corpus.second.json()["failures"])
    assert corpus.third.code == 0
    assert corpus.third_writes == 0
    first = corpus.first.json()
    for kind, counts in (("part", first["parts"]), ("purchase_order", first["purchase_orders"])):
        assert counts["failed"] == len({f["ion_id"] for f in first["failures"] if f["kind"] == kind})
    for dump in (corpus.first_dump, corpus.second_dump):
        docs = collections.Counter(str(p.get("DocNumber")) for p in dump["PurchaseOrder"])
        assert [d for d, n in docs.items() if n > 1] == []
        names = collections.Counter(str(i.get("Name")).lower() for i in dump["Item"])
        assert [d for d, n in names.items() if n > 1] == []
        assert not dump.get("deleted")
    # one line each on stderr for a failure, never a traceback
    assert "Traceback" not in corpus.first.stderr + corpus.second.stderr


@pytest.mark.parametrize("case", CASES, ids=[c["file"].removesuffix(".json") for c in CASES])
def test_first_run(case: dict[str, Any], corpus: Corpus) -> None:
    failures = _failures(corpus.first)
    if case["expect"] == "sync":
        assert ("purchase_order", _doc(case)) not in failures, failures.get(("purchase_order", _doc(case)))
        _check_content(case, corpus.first_dump)
        return
    queued = {(q["kind"], str(q["ion_id"])): q for q in corpus.first_status["queue"]}
    for want in case["failures"]:
        key = (want["kind"], want["ion_id"])
        assert key in failures, f"{case['file']}: no failure for {key}; got {sorted(failures)}"
        got = failures[key]
        for text in want["message"]:
            assert text in got["message"], (text, got["message"])
        assert got.get("hint"), got
        for text in want["hint"]:
            assert text in got["hint"], (text, got["hint"])
        assert got["code"], got
        assert key in queued, f"{key} is not queued"
        assert "\n" not in got["message"] or got["message"].count("\n") < 10
    assert _pos(corpus.first_dump, _doc(case)) == []


@pytest.mark.parametrize("case", [c for c in CASES if c["expect"] == "fail"],
                         ids=[c["file"].removesuffix(".json") for c in CASES if c["expect"] == "fail"])
def test_after_the_fix(case: dict[str, Any], corpus: Corpus) -> None:
    failures = _failures(corpus.second)
    for want in case["failures"]:
        assert (want["kind"], want["ion_id"]) not in failures, failures[(want["kind"], want["ion_id"])]
    if case.get("after_fix") == "unqueued":
        assert _pos(corpus.second_dump, _doc(case)) == []
        return
    assert len(_pos(corpus.second_dump, _doc(case))) == 1


def _lost(corpus: Corpus) -> list[str]:
    """Records that should be in QBO and are not, counted from QBO's contents: a legitimate record
    after the first run, and after the fixes every record whose fix does not take it off the queue."""
    def doc(case: dict[str, Any]) -> str:
        return str((case.get("check") or {}).get("po", _doc(case)))

    lost = [c["file"] for c in CASES if c["expect"] == "sync" and not _pos(corpus.first_dump, doc(c))]
    return lost + [c["file"] for c in CASES if c.get("after_fix") != "unqueued"
                   and not _pos(corpus.second_dump, doc(c))]


def _write_figures(corpus: Corpus) -> dict[str, Any]:
    first = corpus.first.json()
    figures = {
        "bad_inputs_tried": len(CASES),
        "expected_to_fail": sum(c["expect"] == "fail" for c in CASES),
        "legitimate_and_synced": sum(c["expect"] == "sync" for c in CASES),
        "first_run": {"exit_code": corpus.first.code, "failures": len(first["failures"]),
                      "purchase_orders": first["purchase_orders"], "parts": first["parts"]},
        "after_fixes": {"exit_code": corpus.second.code, "purchase_orders": corpus.second.json()["purchase_orders"]},
        "fix_side": dict(collections.Counter((c.get("fix") or {}).get("side", "none") for c in CASES)),
        "duplicates_found": max(corpus.duplicates),
        "duplicate_refusals": corpus.refusals,
        "records_lost": len(_lost(corpus)),
    }
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "bad_input.json").write_text(json.dumps(figures, indent=2))
    print("bad-input figures:", json.dumps(figures))
    return figures
