"""W2 scale: W1 times 20 (20,000 POs, 8,000 parts); memory must stay flat in the number of POs.

Targets (issue 7): peak RSS of the ionqbo process at most 150 MB and flat in the number of POs; CPU
for mapping and diffing at most 1 ms per PO; no 429 reaches the client. The script runs the backfill
at each of ``--scales`` (default 1 and 20 times W1) to show how memory and CPU grow with the POs. The
per-record baseline runs on the largest scale but stops after ``--baseline-records`` records; its cost
is extrapolated (it is linear: two requests a record).

    python benchmarks/w2_scale.py --no-limits            # request counts, CPU, memory (~10 min)
    python benchmarks/w2_scale.py --no-limits --quick    # scales 0.5 and 2
    python benchmarks/w2_scale.py                        # limits on: ~25 min for ionqbo alone
"""

from __future__ import annotations

import sys

import bench

RSS_LIMIT_MB = 150.0
FLAT_GROWTH = 0.15  # "flat": the largest run's peak RSS within 15% of the smallest's
MAP_DIFF_MS = 1.0


def main() -> int:
    """Run W2 at every scale and print the figures and targets."""
    p = bench.parser(__doc__.splitlines()[0] if __doc__ else "W2")
    p.add_argument("--scales", default=None, help="comma-separated sizes relative to W1 (default 1,20; --quick 0.5,2)")
    p.add_argument("--baseline-records", type=int, default=1000, help="records the baseline handles before it stops")
    args = p.parse_args()
    text = args.scales or ("0.5,2" if args.quick else (str(args.scale) if args.scale else "1,20"))
    scales = sorted(float(s) for s in text.split(","))
    limits = not args.no_limits
    print(f"== W2 scale: scales {scales} of W1; QBO emulator "
          f"{'published limits enforced, latency ' + str(args.latency) + ' s' if limits else 'no limits, ionqbo pacing lifted'}")
    results = []
    with bench.workdir(args.keep) as work, bench.SandboxProcess(work) as box:
        for scale in scales:
            w = bench.Workload(seed=args.seed).scaled(scale)
            print(f"== scale {scale}: {w.describe()}")
            largest = scale == scales[-1]
            results.append(bench.backfill(
                box, work, w, limits=limits, latency=args.latency, baseline=largest and not args.no_baseline,
                extra=bench.extra_settings(args), label=f"ionqbo-x{scale:g}", baseline_records=args.baseline_records))
    print("-- scale table")
    print(f"   {'scale':>6} {'POs':>7} {'parts':>6} {'QBO req':>8} {'ION req':>8} {'wall s':>8} {'CPU ms/PO':>10} "
          f"{'map+diff ms/PO':>15} {'peak RSS MB':>12}")
    for r in results:
        md = r.map_diff or {}
        map_diff = md.get("map_ms_per_po", 0.0) + md.get("diff_ms_per_po", 0.0)
        total = int(r.ours.counters.get("qbo", {}).get("total", 0))
        print(f"   {r.workload.pos / 1000:>6g} {r.workload.pos:>7} {r.workload.parts:>6} {total:>8} {r.ours.ion_requests:>8} "
              f"{r.ours.wall:>8.1f} {r.ours.cpu / r.workload.pos * 1000:>10.2f} {map_diff:>15.3f} {r.ours.max_rss_mb:>12.1f}")
    targets = bench.Targets()
    big, small = results[-1], results[0]
    bench.backfill_targets(big, targets, max_qbo=None, max_ion=None, max_ratio=1.2 if limits else None)
    targets.check(f"peak RSS <= {RSS_LIMIT_MB:.0f} MB", big.ours.max_rss_mb <= RSS_LIMIT_MB,
                  f"{big.ours.max_rss_mb:.1f} MB at {big.workload.pos} POs")
    if len(results) > 1:
        growth = big.ours.max_rss_mb - small.ours.max_rss_mb
        per_k = growth / ((big.workload.pos - small.workload.pos) / 1000)
        targets.check("memory flat in the number of POs", growth <= FLAT_GROWTH * small.ours.max_rss_mb,
                      f"{small.ours.max_rss_mb:.1f} MB at {small.workload.pos} POs -> {big.ours.max_rss_mb:.1f} MB at "
                      f"{big.workload.pos} POs: +{growth:.1f} MB ({per_k:.2f} MB per 1,000 POs)")
    md = big.map_diff or {}
    map_diff = md.get("map_ms_per_po", 0.0) + md.get("diff_ms_per_po", 0.0)
    targets.check(f"mapping + diffing CPU <= {MAP_DIFF_MS} ms per PO", map_diff <= MAP_DIFF_MS if md else None,
                  f"{map_diff:.3f} ms/PO measured apart; the whole ionqbo process used "
                  f"{big.ours.cpu / big.workload.pos * 1000:.2f} ms/PO of CPU (HTTP, JSON, ION parsing included)")
    targets.print()
    return 0 if all(ok is not False for _, ok, _ in targets.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
