"""Run the ionqbo CLI with its client-side QBO pacing lifted, for ``--no-limits`` benchmark runs only.

ionqbo paces itself under QBO's published limits (``ionqbo.qbo.limiter``: 480 requests and 38 batch
requests a minute), and has no setting to turn that off, rightly. A ``--no-limits`` run measures
request counts, CPU and memory on a large workload, where that pacing would only add waiting (W2's
934 batches would take 25 minutes). This wrapper raises the RateLimiter's default budgets, then runs
the unchanged CLI (``python benchmarks/unpaced.py sync ...`` = ``python -m ionqbo sync ...``) or, with
``--baseline``, the per-record baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ionqbo.qbo import limiter  # noqa: E402 - after the sys.path fix above

UNLIMITED = 10**9


def lift_pacing() -> None:
    """Make every RateLimiter built from here on use budgets no run reaches."""
    defaults = limiter.RateLimiter.__init__.__kwdefaults__
    assert defaults is not None
    defaults.update(per_minute=UNLIMITED, per_second=UNLIMITED, batch_per_minute=UNLIMITED)


def main() -> int:
    """Lift the pacing and run the CLI (or the baseline with ``--baseline``)."""
    lift_pacing()
    args = sys.argv[1:]
    if args[:1] == ["--baseline"]:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import baseline

        return baseline.main(args[1:])
    from ionqbo.cli import main as cli_main

    sys.argv = ["ionqbo", *args]
    cli_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
