"""`ionqbo demo`: the whole mission against the built-in sandbox, narrated for a first-time user."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from tabulate import tabulate

from ionqbo.config import Settings
from ionqbo.errors import ExitCode
from ionqbo.http import redact
from ionqbo.report import render_sync
from ionqbo.sandbox.server import Sandbox

Echo = Callable[[str], None]


def _browser(url: str) -> bool:
    """Stand in for the person who clicks "Connect" on Intuit's consent page (the sandbox approves at once)."""

    def visit() -> None:
        try:
            requests.get(url, timeout=30, allow_redirects=True)
        except requests.RequestException:
            pass  # the connect call times out and says so

    threading.Thread(target=visit, daemon=True).start()
    return True


def _money(value: Any) -> str:
    return f"{Decimal(str(value)):,.2f}" if value is not None else "-"


def show_purchase_orders(qbo: Any, echo: Echo) -> None:
    """Print the QBO purchase orders the way an accountant reads them in QuickBooks."""
    names: dict[tuple[str, str], str] = {}
    for entity, field in (("Vendor", "DisplayName"), ("Item", "Name"), ("Account", "Name"), ("Class", "Name")):
        for obj in qbo.query_all(entity):
            names[(entity, str(obj["Id"]))] = str(obj.get(field, ""))
    pos = sorted(qbo.query_all("PurchaseOrder"), key=lambda p: str(p.get("DocNumber", "")))
    for po in pos:
        vendor = names.get(("Vendor", str(po.get("VendorRef", {}).get("value"))), "?")
        currency = (po.get("CurrencyRef") or {}).get("value", "USD")
        echo("")
        echo(f"Purchase order {po.get('DocNumber')}  |  {vendor}  |  {po.get('TxnDate')}  |  "
             f"{po.get('POStatus', 'Open')}  |  total {currency} {_money(po.get('TotalAmt'))}")
        ship = po.get("ShipAddr") or {}
        if ship:
            echo("  ship to: " + ", ".join(str(ship[k]) for k in ("Line1", "Line2", "Line3", "City",
                                                                   "CountrySubDivisionCode", "PostalCode") if ship.get(k)))
        rows = []
        for line in po.get("Line", []):
            if line.get("DetailType") == "ItemBasedExpenseLineDetail":
                d = line["ItemBasedExpenseLineDetail"]
                what = "item: " + names.get(("Item", str(d.get("ItemRef", {}).get("value"))), "?")
                qty, rate = d.get("Qty"), d.get("UnitPrice")
            else:
                d = line.get("AccountBasedExpenseLineDetail", {})
                what = "category: " + names.get(("Account", str(d.get("AccountRef", {}).get("value"))), "?")
                qty = rate = None
            cls = names.get(("Class", str((d.get("ClassRef") or {}).get("value"))), "")
            rows.append([what, (line.get("Description") or "")[:40], qty if qty is not None else "",
                         rate if rate is not None else "", _money(line.get("Amount")), cls])
        table = tabulate(rows, headers=["product/service or category", "description", "qty", "rate", "amount",
                                        "class"], tablefmt="simple")
        for row in table.splitlines():
            echo("  " + row)


def run_demo(*, echo: Echo, state_dir: Path | None = None) -> int:
    """Start the sandbox, connect, sync, show, sync again, fix the mapping gap, sync once more."""
    from ionqbo.ion.client import IonClient
    from ionqbo.qbo.auth import QboAuth, TokenStore
    from ionqbo.qbo.auth import connect as qbo_connect
    from ionqbo.qbo.client import QboClient
    from ionqbo.state import StateStore
    from ionqbo.sync import Syncer, SyncOptions

    workdir = Path(tempfile.mkdtemp(prefix="ionqbo-demo-")) if state_dir is None else state_dir
    box = Sandbox(sample=True, multicurrency=True).start()
    try:
        env = box.env()
        env.pop("QBO_REFRESH_TOKEN")  # the demo connects the way a person does
        env["IONQBO_STATE_DIR"] = str(workdir)
        env["IONQBO_THROTTLE_WAIT"] = "1"
        settings = Settings.from_values(env)
        redact.add(*settings.secrets())
        echo("== ionqbo demo ==")
        echo(f"A sandbox ION (purchasing of a small machine shop) runs on {box.ion_url}, and a sandbox "
             f"QuickBooks Online company on {box.qbo_url}.")
        echo("ION has 5 purchase orders: 4 Ordered (one in EUR, one with an expense code QBO lacks) and 1 Draft.")
        echo("")
        echo("1. ionqbo connect: the OAuth consent (auto-approved in the sandbox)")
        store = TokenStore(settings.token_store_path)
        summary = qbo_connect(settings, store, no_browser=False, open_browser=_browser,
                              prompt=lambda _text: "", echo=lambda _text: None, timeout=30)
        echo(f"   connected to company {summary.get('realm_id')}; tokens stored (mode 0600) in {settings.token_store_path}")

        auth = QboAuth(settings, store)
        qbo = QboClient(settings, auth)

        def sync(title: str) -> int:
            echo("")
            echo(title)
            box.qbo.reset_counters()
            ion = IonClient(settings)
            report = Syncer(settings, ion=ion, qbo=qbo, store=StateStore(settings.state_path),
                            realm_id=auth.realm_id).run(SyncOptions())
            for line in render_sync(report).splitlines():
                echo("   " + line)
            writes = box.qbo.counters.get("writes", 0)
            echo(f"   QBO emulator counted {writes} write(s) in this run.")
            return int(report.exit_code)

        first = sync("2. ionqbo sync: the first run creates the items, then the purchase orders")
        echo("")
        echo("3. What the accountant now sees in QuickBooks:")
        show_purchase_orders(qbo, lambda text: echo("   " + text))

        second = sync("4. ionqbo sync again: nothing changed in ION, so nothing is written twice")

        echo("")
        echo("5. The error: purchase order 1045 has a line with expense code 7777, and the QBO chart of accounts")
        echo("   has no account numbered or named 7777. ionqbo never invents accounts: it parked the PO, named the")
        echo("   missing account and where to add it, and exits 3 so cron notices. The accountant adds the account:")
        box.qbo.load({"Account": [{"Name": "Calibration Services", "AcctNum": "7777", "AccountType": "Expense",
                                   "AccountSubType": "OtherMiscellaneousServiceCost", "Classification": "Expense",
                                   "Active": True}]})
        third = sync("6. ionqbo sync: the parked PO goes through with no change in ION")
        echo("")
        ok = first == ExitCode.PARTIAL and second == ExitCode.PARTIAL and third == ExitCode.OK
        echo("Done: every Ordered ION purchase order is in QuickBooks exactly once." if ok else
             f"The demo did not end as expected (exit codes {first}, {second}, {third}).")
        echo("Next: `ionqbo sandbox --print-env > .env` gives you settings to try each command by hand.")
        return int(ExitCode.OK if ok else ExitCode.BUG)
    finally:
        box.stop()
        if state_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
