"""The coarse level of a two-level dataset, derived from the fine model's probabilities.

The one rule (ARCHITECTURE.md, definitions): a coarse class's probability is the sum of its fine
members' probabilities, and the coarse prediction is the argmax of those sums (through `decide`). That
can differ from the coarse class of the fine argmax: with P = 0.40 'Shirt' (tops) but 0.35 'Sneaker' +
0.25 'Sandal' (footwear), the fine argmax says tops while footwear holds 0.60 of the probability. The sum
is the model's own probability of the coarse event, so its argmax is the Bayes decision for the coarse
question; the report, the Evaluate page and Predict all use this one.
"""

from __future__ import annotations

import numpy as np

from engine.metrics.core import decide


def coarse_probs(probs: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """(N, coarse) probabilities: column k sums the fine columns j with parent[j] == k."""
    probs = np.asarray(probs, np.float64)
    parent = np.asarray(parent, np.int64)
    out = np.zeros((probs.shape[0], int(parent.max()) + 1 if parent.size else 0), np.float64)
    np.add.at(out.T, parent, probs.T)
    return out


def coarse_labels(labels: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """The coarse class of each fine label."""
    return np.asarray(parent, np.int64)[np.asarray(labels, np.int64)]


def coarse_decide(probs: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """The coarse prediction: argmax of the summed probabilities (not the coarse class of the fine argmax)."""
    return decide(coarse_probs(probs, parent), "multiclass")
