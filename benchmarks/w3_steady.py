"""W3 steady state: after the W1 backfill, a run where nothing changed, then one where one ION PO changed.

Targets (issue 7): nothing changed, 0 QBO requests; one PO changed, at most 4 QBO requests; no 429
reaches the client. The runs are what cron does: ``ionqbo sync --json`` from the stored cursor (no
``--since``); the backfill repeated (``--since 2000-01-01``) with nothing changed is shown too. The
per-record baseline runs the same two steps from the same starting points (it keeps a cursor, the
time the backfill started, and no other state).

    python benchmarks/w3_steady.py               # W1-sized, measured runs with QBO's limits and latency
    python benchmarks/w3_steady.py --quick       # a tenth of W1
    python benchmarks/w3_steady.py --no-limits
    python benchmarks/w3_steady.py --strategy scan   # one ION read strategy (default: keyset, then scan)
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import bench


def _changed_line(box: bench.SandboxProcess, po_id: int) -> dict[str, Any]:
    """Change the first line of ``po_id`` in ION (quantity + 1); returns the new line."""
    po = next(p for p in box.admin("ion", "dump", method="GET")["purchaseOrders"] if p["id"] == po_id)
    line = po["purchaseOrderLines"][0]
    qty = int(Decimal(str(line["quantity"]))) + 1
    unit = Decimal(str(line["unitCost"]))
    total = unit * qty
    changes = {"quantity": qty, "totalCost": int(total) if total == total.to_integral_value() else float(total)}
    box.admin("ion", f"purchase-orders/{po_id}/lines/{line['id']}", changes)
    return {**line, **changes}


def _qbo_line_qty(box: bench.SandboxProcess, doc: str, line_index: int = 0) -> Any:
    po = next(p for p in box.admin("qbo", "dump", method="GET")["PurchaseOrder"] if p.get("DocNumber") == doc)
    return po["Line"][line_index]["ItemBasedExpenseLineDetail"]["Qty"]


def main() -> int:
    """Run W3 for each ION read strategy and print its figures and targets."""
    args = bench.parser(__doc__.splitlines()[0] if __doc__ else "W3").parse_args()
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    w = bench.Workload(seed=args.seed).scaled(scale)
    rows: list[tuple[str, str, bench.Measured]] = []
    ok = True
    for strategy, schema in bench.strategies(args):
        ok = steady(args, w, scale, strategy, schema, rows) and ok
    bench.print_strategies(rows)
    return 0 if ok else 1


def steady(args: Any, w: bench.Workload, scale: float, strategy: str, schema: Any,
           rows: list[tuple[str, str, bench.Measured]]) -> bool:
    """W3 with one ION read strategy; True when every target is met."""
    limits = not args.no_limits
    extra = bench.extra_settings(args)
    print(f"== W3 steady state (scale {scale}), ION read strategy {strategy}, after a backfill of: {w.describe()}")
    print(f"   measured runs: QBO emulator {'published limits enforced, latency ' + str(args.latency) + ' s' if limits else 'no limits'}")
    targets = bench.Targets()
    runs: list[bench.Measured] = []
    with bench.workdir(args.keep) as work, bench.SandboxProcess(work, ion_schema=schema) as box:
        box.load(bench.ion_data(w), bench.qbo_data(w))
        box.limits(rate_limits=False, latency=0.0)
        cursor = datetime.now(UTC).isoformat()  # what the baseline keeps: the time its backfill started
        env = box.env_file(work / "ionqbo.env", work / "ionqbo-state", extra)
        setup = bench.run_measured("setup-backfill", bench.sync_argv(env, paced=False), workdir=work, box=box)
        print(f"-- set-up backfill (not measured; no limits, pacing lifted): exit {setup.exit_code}, {setup.wall:.1f} s, "
              f"POs {setup.report.get('purchase_orders')}")
        if setup.exit_code != 0:
            print(setup.stderr_tail)
            return False
        box.limits(rate_limits=limits, latency=args.latency if limits else 0.0)
        base_env = box.env_file(work / "baseline.env", work / "baseline-state", extra)

        def measure(label: str, argv: list[str]) -> bench.Measured:
            m = bench.run_measured(label, argv, workdir=work, box=box)
            bench.print_run(m, pos=w.pos)
            runs.append(m)
            if label.startswith("ionqbo-"):
                rows.append((strategy, label.removeprefix("ionqbo-"), m))
            return m

        quiet = measure("ionqbo-nothing-changed", bench.sync_argv(env, since=None, paced=limits))
        quiet_base = measure("baseline-nothing-changed", bench.baseline_argv(base_env, since=cursor, paced=limits))
        po_id = 100000 + w.pos // 2
        line = _changed_line(box, po_id)
        print(f"-- changed in ION: PO {po_id} line {line['id']} quantity -> {line['quantity']}")
        before = box.admin("qbo", "dump", method="GET")
        one = measure("ionqbo-one-po-changed", bench.sync_argv(env, since=None, paced=limits))
        synced_qty = _qbo_line_qty(box, str(po_id))
        box.restore_qbo(before)
        box.limits(rate_limits=limits, latency=args.latency if limits else 0.0)
        one_base = measure("baseline-one-po-changed", bench.baseline_argv(base_env, since=cursor, paced=limits))
        again = measure("ionqbo-backfill-repeated", bench.sync_argv(env, since="2000-01-01", paced=limits))
    bench.print_comparison(one, one_base)

    def total(m: bench.Measured) -> int:
        return int(m.counters.get("qbo", {}).get("total", 0))

    targets.check("nothing changed: 0 QBO requests", total(quiet) == 0 and quiet.exit_code == 0,
                  f"{total(quiet)} (exit {quiet.exit_code}; ION {quiet.ion_requests}); baseline {total(quiet_base)}")
    updated = (one.report.get("purchase_orders") or {}).get("updated")
    targets.check("one PO changed: <= 4 QBO requests", total(one) <= 4 and one.exit_code == 0 and updated == 1,
                  f"{total(one)} ({bench._kinds(one.report.get('qbo_requests_by_kind') or {})}; POs updated {updated}, "
                  f"ION {one.ion_requests}); baseline {total(one_base)}")
    targets.check("the change reached QBO", str(synced_qty) == str(line["quantity"]),
                  f"QBO line quantity {synced_qty}, ION {line['quantity']}")
    targets.check("backfill repeated, nothing changed: 0 QBO requests (informational)", total(again) == 0,
                  f"{total(again)} QBO, {again.ion_requests} ION")
    throttled = sum(int(m.counters.get("qbo", {}).get("throttled", 0)) for m in runs)
    targets.check("no 429 reaches the client", throttled == 0, f"{throttled} sent by the emulator in the measured runs")
    targets.print()
    return all(ok is not False for _, ok, _ in targets.rows)


if __name__ == "__main__":
    sys.exit(main())
