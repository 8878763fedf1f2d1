"""Single-shot vs. static plan vs. the oracle closed loop on held-out testbed tasks, side by side.

All three run through the real MiraAgent with the same noisy TestbedEditor and are scored by the exact TestbedJudge;
a task succeeds when the final scene is exactly the target. The oracle is the upper bound a learned policy can reach.

    python benchmarks/testbed_baselines.py [--n 200] [--error-rate 0.2] [--partial random]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from mira.testbed.demo import format_table, run_baselines
from mira.testbed.tasks import HELD_OUT_SEED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="held-out tasks")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--error-rate", type=float, default=0.2)
    parser.add_argument("--partial", default="random", choices=("first", "random", "all"))
    parser.add_argument("--max-steps", type=int, default=12)
    args = parser.parse_args()

    start = time.perf_counter()
    results = run_baselines(args.n, args.seed, args.error_rate, (1, 4), args.max_steps, args.partial)
    seconds = time.perf_counter() - start
    counts = Counter(results[0].clauses)
    print(f"{args.n} held-out tasks (seed {args.seed}), clauses per task: "
          + ", ".join(f"{k}: {counts[k]}" for k in sorted(counts))
          + f"; editor error rate {args.error_rate}, partial execution '{args.partial}', max {args.max_steps} steps")
    print(format_table(results, args.error_rate))
    print(f"{seconds:.1f} s for {3 * args.n} agent runs ({sum(sum(r.calls) for r in results)} editor calls)")


if __name__ == "__main__":
    main()
