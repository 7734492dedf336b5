"""Binary threshold sweep on 1,000,000 scores: Loupe's full sweep (FAR/FRR/HTER curve + EER + min-HTER)
beside `sklearn.metrics.roc_curve` alone on the same scores, best of N, interleaved.

    .venv/bin/python bench/bench_metrics.py [--n 1000000] [--repeat 3] [--ties 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import load

from engine.metrics import sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--decimals", type=int, default=None, help="round scores (many ties) to this many decimals")
    args = ap.parse_args()
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    y = rng.random(args.n) < 0.12
    s = 1 / (1 + np.exp(-(rng.normal(size=args.n) + 2 * y - 1)))
    if args.decimals is not None:
        s = np.round(s, args.decimals)

    def ours():
        sw = sweep(y, s)
        return sw.hter, sw.eer(), sw.min_hter()

    def theirs():
        return roc_curve(y, s)

    best = {"loupe": np.inf, "sklearn": np.inf}
    for _ in range(args.repeat):
        for name, fn in (("loupe", ours), ("sklearn", theirs)):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    _, (eer, t_eer), (mh, t_mh) = ours()
    fpr, tpr, _ = roc_curve(y, s)
    print(f"n={args.n:,} scores, {len(np.unique(s)):,} distinct; best of {args.repeat}; {load()}")
    print("| method | seconds | ratio vs sklearn |\n|---|---|---|")
    print(f"| sklearn.metrics.roc_curve (ROC only) | {best['sklearn']:.3f} | 1.00x |")
    print(
        f"| loupe sweep: FAR/FRR/HTER curve + EER + min-HTER | {best['loupe']:.3f} | "
        f"{best['loupe'] / best['sklearn']:.2f}x |"
    )
    print(
        f"EER {eer:.4f} at {t_eer:.4f}; min HTER {mh:.4f} at {t_mh:.4f}; "
        f"sklearn ROC EER check: {float(((1 - tpr) + fpr)[np.argmin(np.abs(1 - tpr - fpr))] / 2):.4f}"
    )


if __name__ == "__main__":
    main()
