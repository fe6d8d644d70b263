"""End to end, outside the US: the sample data synced into Australian, UK and Canadian QBO companies.

The real CLI (a subprocess) against the emulators over HTTP on 127.0.0.1: a tax code on every line
(per expense code, per fee, the default), tax-exclusive and tax-inclusive amounts, an update, a
cancel, a PO with a linked bill, and a missing tax code that parks only its PO with the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from ionqbo.sandbox.httpd import App, Request, Response
from ionqbo.sandbox.server import Sandbox

from conftest import Env, make_env

CENT = Decimal("0.01")
# per country: (default code, rate), the code mapped for expense code 6100, the code mapped for the Shipping fee
COUNTRY = {
    "AU": {"default": ("GST", Decimal(10)), "6100": ("Input taxed", Decimal(0)), "Shipping": ("GST free", Decimal(0))},
    "UK": {"default": ("20.0% S", Decimal(20)), "6100": ("0.0% Z", Decimal(0)), "Shipping": ("5.0% R", Decimal(5))},
    "CA": {"default": ("HST ON", Decimal(13)), "6100": ("Zero-rated", Decimal(0)), "Shipping": ("GST", Decimal(5))},
}


class Tap:
    """Keeps the body of every QBO batch request (to see exactly what ionqbo sent)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def __call__(self, name: str, app: App) -> App:
        if name != "qbo":
            return app

        def tapped(request: Request) -> Response:
            if request.path.endswith("/batch") and request.body:
                self.batches.append(json.loads(request.body))
            return app(request)

        return tapped

    def sent(self, entity: str = "PurchaseOrder") -> list[tuple[str, dict[str, Any]]]:
        return [(item["operation"], item[entity]) for batch in self.batches
                for item in batch["BatchItemRequest"] if entity in item]


def mappings_file(tmp_path: Path, country: str, *, suppliers: dict[str, str] | None = None) -> Path:
    spec = COUNTRY[country]
    text = (f'[tax_codes.expense_codes]\n"6100" = "{spec["6100"][0]}"\n'
            f'[tax_codes.fees]\n"Shipping" = "{spec["Shipping"][0]}"\n')
    if suppliers:
        text += "[tax_codes.suppliers]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in suppliers.items())
    path = tmp_path / "mappings.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def tap() -> Tap:
    return Tap()


def start(country: str, tap: Tap) -> Sandbox:
    return Sandbox(sample=True, multicurrency=True, country=country).start(tap=tap)


@pytest.fixture(params=["AU", "UK", "CA"])
def company(request: pytest.FixtureRequest, tmp_path: Path, tap: Tap) -> Iterator[tuple[str, Env]]:
    box = start(request.param, tap)
    try:
        yield request.param, make_env(box, tmp_path, IONQBO_MAPPINGS=str(mappings_file(tmp_path, request.param)))
    finally:
        box.stop()


@pytest.fixture
def au(tmp_path: Path, tap: Tap) -> Iterator[Env]:
    box = start("AU", tap)
    try:
        yield make_env(box, tmp_path, IONQBO_MAPPINGS=str(mappings_file(tmp_path, "AU")))
    finally:
        box.stop()


def all_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for rows in report["sections"].values() for c in rows]


def qbo_po(env: Env, doc: str) -> dict[str, Any]:
    found = [p for p in env.box.qbo.dump()["PurchaseOrder"] if p.get("DocNumber") == doc]
    assert len(found) == 1, found
    return found[0]


def dec(value: Any) -> Decimal:
    return Decimal(str(value))


def detail(line: dict[str, Any]) -> dict[str, Any]:
    return dict(line[line["DetailType"]])


def code_names(env: Env) -> dict[str, str]:
    return {str(c["Id"]): str(c["Name"]) for c in env.box.qbo.dump()["TaxCode"]}


def check_tax(env: Env, po: dict[str, Any], rates: dict[str, Decimal]) -> None:
    """TotalAmt = lines + tax, the tax computed line by line at each line's code's rate."""
    names = code_names(env)
    tax = Decimal(0)
    for line in po["Line"]:
        name = names[detail(line)["TaxCodeRef"]["value"]]
        tax += (dec(line["Amount"]) * rates[name] / 100).quantize(CENT, rounding=ROUND_HALF_UP)
    assert dec(po["TxnTaxDetail"]["TotalTax"]) == tax
    assert dec(po["TotalAmt"]) == sum((dec(ln["Amount"]) for ln in po["Line"]), Decimal(0)) + tax


def test_sample_data_syncs_with_tax_codes_per_expense_code_and_fee_then_updates_and_cancels(
        company: tuple[str, Env], tap: Tap) -> None:
    country, env = company
    spec = COUNTRY[country]
    rates = {name: rate for name, rate in spec.values()}
    first = env.run("sync", "--json")
    assert first.code == 3, first.stderr
    report = first.json()
    assert report["purchase_orders"]["created"] == 3
    assert [f["ion_id"] for f in report["failures"]] == ["1045"]  # its expense code 7777 has no account

    names = code_names(env)
    po = qbo_po(env, "1043")  # item line, expense code 6100, fee Shipping
    assert po["GlobalTaxCalculation"] == "TaxExcluded"
    by_description = {ln.get("Description"): names[detail(ln)["TaxCodeRef"]["value"]] for ln in po["Line"]}
    assert by_description == {"CFRP plate 300x300": spec["default"][0], "5-axis fixture plate": spec["6100"][0],
                              "Shipping": spec["Shipping"][0]}
    # the amounts are ION's (tax exclusive); QBO adds the tax
    assert [dec(ln["Amount"]) for ln in po["Line"]] == [Decimal(620), Decimal(480), Decimal("22.5")]
    check_tax(env, po, rates)
    fees = {ln["Description"]: names[detail(ln)["TaxCodeRef"]["value"]] for ln in qbo_po(env, "1042")["Line"]
            if ln["DetailType"] == "AccountBasedExpenseLineDetail"}
    assert fees == {"Shipping": spec["Shipping"][0], "Expedite": spec["default"][0]}
    # every line ionqbo sent carried its tax code and every PO its GlobalTaxCalculation
    for _, body in tap.sent():
        assert body["GlobalTaxCalculation"] == "TaxExcluded"
        assert all("TaxCodeRef" in detail(ln) for ln in body["Line"])

    env.box.qbo.reset_counters()
    again = env.run("sync", "--json")
    assert env.box.qbo.counters["writes"] == 0, again.stdout  # what QBO added (tax, names) is no change

    # an update: QBO's tax details are sent back, not stripped, and recomputed for the new line
    env.box.ion.update_line(1042, 5001, {"quantity": 30, "totalCost": 1275.0})
    tap.batches.clear()
    update = env.run("sync", "--json").json()
    assert update["purchase_orders"]["updated"] == 1
    [(operation, body)] = tap.sent()
    assert operation == "update" and "TxnTaxDetail" in body and body["GlobalTaxCalculation"] == "TaxExcluded"
    po = qbo_po(env, "1042")
    assert dec(next(ln for ln in po["Line"] if ln.get("Description", "").startswith("Bracket"))["Amount"]) == 1275
    check_tax(env, po, rates)

    # a cancel closes the PO and leaves its tax as QBO has it
    before = qbo_po(env, "1043")
    env.box.ion.update_purchase_order(1043, {"status": "CANCELED"})
    closed = env.run("sync", "--json").json()
    assert closed["purchase_orders"]["closed"] == 1
    after = qbo_po(env, "1043")
    assert after["POStatus"] == "Closed"
    assert after["TxnTaxDetail"] == before["TxnTaxDetail"] and after["Line"] == before["Line"]


def test_tax_inclusive_amounts_make_the_qbo_total_ions_gross(au: Env) -> None:
    au.set(IONQBO_TAX_AMOUNTS="inclusive")
    assert au.run("sync").code == 3
    po = qbo_po(au, "1042")  # ION: 1020 + 1.00 + fees 35 + 150 = 1206, every figure including GST
    assert po["GlobalTaxCalculation"] == "TaxInclusive"
    assert dec(po["TotalAmt"]) == Decimal(1206)
    for line in po["Line"]:
        d = detail(line)
        assert dec(d["TaxInclusiveAmt"]) >= dec(line["Amount"])
        if line["DetailType"] == "ItemBasedExpenseLineDetail":  # quantity x rate still gives the amount
            assert (dec(d["Qty"]) * dec(d["UnitPrice"])).quantize(CENT, rounding=ROUND_HALF_UP) == dec(line["Amount"])
    bracket = next(ln for ln in po["Line"] if ln.get("Description", "").startswith("Bracket"))
    assert dec(bracket["Amount"]) == Decimal("927.27") and dec(detail(bracket)["TaxInclusiveAmt"]) == 1020
    au.box.qbo.reset_counters()
    assert au.run("sync").code == 3 and au.box.qbo.counters["writes"] == 0


def test_a_missing_tax_code_parks_only_its_po_with_the_fix(tmp_path: Path, tap: Tap) -> None:
    box = start("UK", tap)
    try:
        mapped = {"Precision Machining, LLC": "20.0% S", "Kessler Präzision GmbH": "0.0% Z"}
        env = make_env(box, tmp_path, QBO_PURCHASE_TAX_CODE="",
                       IONQBO_MAPPINGS=str(mappings_file(tmp_path, "UK", suppliers=mapped)))
        del env.values["QBO_PURCHASE_TAX_CODE"]
        env.write()
        run = env.run("sync", "--json")
        assert run.code == 3
        report = run.json()
        failure = next(f for f in report["failures"] if f["ion_id"] == "1043")  # Acme Corp: no code for its part
        assert "has no tax code" in failure["message"] and "QBO_PURCHASE_TAX_CODE" in failure["hint"]
        assert "[tax_codes" in failure["hint"] and "20.0% S" in failure["hint"]
        assert {"1042", "1044"} <= {str(p["DocNumber"]) for p in box.qbo.dump()["PurchaseOrder"]}
        assert "1043" not in {str(p["DocNumber"]) for p in box.qbo.dump()["PurchaseOrder"]}
        status = env.run("status", "--json").json()
        assert any(q["ion_id"] == "1043" and q["parked"] for q in status["queue"])
        env.set(IONQBO_MAPPINGS=str(mappings_file(tmp_path, "UK", suppliers={**mapped, "Acme Corp": "5.0% R"})))
        fixed = env.run("sync", "--json").json()
        assert "1043" not in {f["ion_id"] for f in fixed["failures"]}
        assert detail(qbo_po(env, "1043")["Line"][0])["TaxCodeRef"]["name"] == "5.0% R"
    finally:
        box.stop()


def test_a_po_with_a_linked_bill_keeps_its_global_tax_calculation(au: Env) -> None:
    assert au.run("sync").code == 3
    po = qbo_po(au, "1042")
    stored = au.box.qbo.store.get("PurchaseOrder", po["Id"])
    assert stored is not None
    link = {"TxnId": "9001", "TxnType": "Bill"}
    stored["Line"][0]["LinkedTxn"] = [link]
    stored["LinkedTxn"] = [link]
    au.box.qbo.store.put("PurchaseOrder", stored)
    au.set(IONQBO_TAX_AMOUNTS="inclusive")  # ION's amounts now read as gross; re-read every PO
    report = au.run("sync", "--since", "2000-01-01", "--json").json()
    assert report["purchase_orders"]["updated"] >= 2
    kept = qbo_po(au, "1042")
    assert kept["GlobalTaxCalculation"] == "TaxExcluded" and kept["LinkedTxn"] == [link]
    # under TaxExcluded, the net of ION's gross: 1020 / 1.1
    bracket = next(ln for ln in kept["Line"] if ln.get("Description", "").startswith("Bracket"))
    assert dec(bracket["Amount"]) == Decimal("927.27") and "TaxInclusiveAmt" not in detail(bracket)
    assert qbo_po(au, "1043")["GlobalTaxCalculation"] == "TaxInclusive"  # no bill: it follows the setting


def test_a_fault_naming_a_tax_code_reads_the_tax_lists_again(au: Env) -> None:
    assert au.run("sync").code == 3
    free = next(c for c in au.box.qbo.store.records["TaxCode"].values() if c["Name"] == "GST free")
    free["Active"] = False  # made inactive in QuickBooks: CDC does not say so
    au.box.ion.update_fee(1042, 7, {"value": 40.0})
    refused = au.run("sync", "--json").json()  # the cached list still says active: QBO refuses (2500)
    failure = next(f for f in refused["failures"] if f["ion_id"] == "1042")
    assert failure["code"] == "qbo_2500", failure
    state = json.loads((au.state_dir / "state.json").read_text())
    assert "TaxCode" not in state["cache"]["qbo_refs"]  # forgotten: the next run reads the list again
    again = au.run("sync", "--json").json()
    failure = next(f for f in again["failures"] if f["ion_id"] == "1042")
    assert failure["code"] == "mapping" and "inactive" in failure["message"]


def test_check_mappings_shows_the_tax_model_each_code_with_its_rate_and_every_line_without_one(
        tmp_path: Path, tap: Tap) -> None:
    box = start("AU", tap)
    try:
        path = tmp_path / "mappings.toml"
        path.write_text('[tax_codes.expense_codes]\n"6100" = "GST free"\n[tax_codes.fees]\n"Shipping" = "Export"\n',
                        encoding="utf-8")
        env = make_env(box, tmp_path, IONQBO_MAPPINGS=str(path))
        del env.values["QBO_PURCHASE_TAX_CODE"]
        env.write()
        run = env.run("check-mappings", "--json")
        assert run.code == 3, run.stderr
        checks = {c["subject"]: c for c in all_checks(run.json())}
        model = checks["tax model"]
        assert model["severity"] == "ok" and "country AU" in model["message"] and "TaxExcluded" in model["message"]
        assert checks["QBO_PURCHASE_TAX_CODE"]["severity"] == "warning"
        mapped = checks['[tax_codes.expense_codes] "6100"']
        assert mapped["severity"] == "ok" and '"GST free"' in mapped["message"] and "0%" in mapped["message"]
        assert checks['[tax_codes.fees] "shipping"']["severity"] == "blocking"  # Export is for sales only
        blocking = {c["subject"] for c in all_checks(run.json()) if c["severity"] == "blocking"}
        assert {'tax code for part "820412-001"', 'tax code for fee "Expedite"',
                'tax code for fee "Shipping"'} <= blocking
        assert 'tax code for expense code "6100"' not in blocking
        # with a default code, only the sales-only fee mapping still blocks
        env.set(QBO_PURCHASE_TAX_CODE="GST")
        run = env.run("check-mappings", "--json")
        checks = {c["subject"]: c for c in all_checks(run.json())}
        assert checks["QBO_PURCHASE_TAX_CODE"]["severity"] == "ok" and "10%" in checks["QBO_PURCHASE_TAX_CODE"]["message"]
        blocking = {c["subject"] for c in all_checks(run.json()) if c["severity"] == "blocking" and "tax" in c["subject"]}
        assert blocking == {'[tax_codes.fees] "shipping"', 'tax code for fee "Shipping"'}
    finally:
        box.stop()
