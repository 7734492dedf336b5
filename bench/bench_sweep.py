"""Sweeps: trials per hour on this machine, and the time pruning saves.

The same study twice on a small real dataset (scikit-learn's digits, the small CNN), same seed, same TPE
sampler and search space (learning rate on a log scale, batch size, dropout): once with the median pruner
(`engine sweep`'s default: a trial ends after an epoch worse than the median of earlier trials there, from
the third trial on) and once without (`--pruner none`). Printed: wall time, trials per hour, epochs trained,
trials pruned, and the best objective each found (pruning should save time without losing the best).

    .venv/bin/python bench/bench_sweep.py [--trials 12] [--epochs 4] [--train-limit 600] [--dataset builtin:digits]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import machine, table  # also puts the repo on sys.path


def one_study(root: Path, pruner: str, args: argparse.Namespace) -> dict:
    from optuna.trial import TrialState

    from engine.config import RunConfig
    from engine.sweep.space import parse_space
    from engine.sweep.study import SweepSettings, run_sweep

    base = RunConfig(dataset=args.dataset, epochs=args.epochs, train_limit=args.train_limit, patience=0, seed=args.seed)
    space = ["lr=loguniform:0.00003:0.03", "batch_size=choice:32,64,128", "dropout=uniform:0:0.5"]
    settings = SweepSettings(
        base=base, params=parse_space(space, base), trials=args.trials, pruner=pruner, startup_trials=2
    )
    t0 = time.perf_counter()
    study = run_sweep(settings, f"bench-{pruner}", root, log=lambda m: None)
    seconds = time.perf_counter() - t0
    trials = study.trials
    epochs = sum(max(t.intermediate_values, default=0) for t in trials)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    return {
        "pruner": pruner,
        "seconds": seconds,
        "trials": len(trials),
        "per_hour": len(trials) / seconds * 3600,
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "epochs": epochs,
        "best": max(t.value for t in done) if done else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="builtin:digits")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-limit", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine())
    print(
        f"{args.dataset}, small_cnn, {args.trials} trials of {args.epochs} epochs on {args.train_limit} training "
        "images; space: lr loguniform 3e-5..3e-2, batch 32/64/128, dropout 0..0.5; TPE, seed "
        f"{args.seed}; objective: val balanced accuracy at the best epoch"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in ("none", "median"):
            r = one_study(Path(tmp) / pruner, pruner, args)
            rows.append(r)
            print(f"  {pruner}: {r['seconds']:.0f} s", flush=True)
    plain, pruned = rows
    print(
        table(
            ["pruner", "wall s", "trials", "trials/hour", "pruned", "epochs trained", "best val bal. acc."],
            [
                [r["pruner"], r["seconds"], r["trials"], r["per_hour"], r["pruned"], r["epochs"], f"{r['best']:.2%}"]
                for r in rows
            ],
        )
    )
    saved = 1 - pruned["seconds"] / plain["seconds"]
    print(f"pruning saved {saved:.0%} of the wall time ({plain['seconds'] - pruned['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
