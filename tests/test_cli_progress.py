"""The CLI's progress bars say what they count, and their rate counts the work they watched (issue 13, item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import progress as cli_progress
from engine.cli.progress import TqdmProgress
from engine.train.fit import fit
from engine.train.jobs import prepare_run
from tests.test_train import tiny


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    import tqdm.std

    c = Clock()
    monkeypatch.setattr(tqdm.std, "time", c)
    return c


@pytest.mark.parametrize(
    "stage, unit",
    [
        ("training", "img"),
        ("decoding", "img"),
        ("resizing", "img"),
        ("hashing", "img"),
        ("extracting features", "img"),
        ("fgsm eps=0.03", "img"),
        ("predicting", "img"),
        ("reading headers", "file"),
        ("extracting", "file"),
        ("lr range test", "step"),
    ],
)
def test_each_stage_bar_is_labelled_with_what_it_counts(stage: str, unit: str, clock: Clock):
    bar = TqdmProgress()
    bar(1, 10, stage)
    assert bar.bar.unit == unit
    bar.close()


def test_a_resumed_training_bar_counts_its_rate_from_where_it_resumed(clock: Clock):
    bar = TqdmProgress()
    bar(3300, 5700, "training")  # a run resumed after 3,300 images
    for _ in range(20):  # then 16 images every 0.05 s: 320 images/s
        clock.t += 0.05
        bar(bar.bar.n + 16, 5700, "training")
    shown = bar.bar.format_dict
    rate = shown["rate"] or (shown["n"] - shown["initial"]) / shown["elapsed"]
    assert rate == pytest.approx(320, rel=0.1)
    assert "img/s" in str(bar.bar) and bar.bar.n == 3300 + 320
    bar.close()


def test_training_reports_images_with_the_epochs_images_as_total(tmp_path: Path):
    cfg = tiny(epochs=2, batch_size=16, train_limit=300)
    run = prepare_run(cfg, tmp_path / "runs")
    calls: list[tuple[int, int]] = []
    fit(cfg, run, log=lambda m: None, progress=lambda d, t, s: calls.append((d, t)) if s == "training" else None)
    (total,) = {t for _, t in calls}
    per_epoch = total // 2
    assert total == 2 * per_epoch and abs(per_epoch - 300) <= 2  # the epoch's images (the limit, stratified)
    steps = [b - a for (a, _), (b, _) in zip(calls, calls[1:])]
    assert calls[0][0] == 0 and calls[-1][0] == total
    assert set(steps) <= {16, per_epoch % 16}  # a batch of images per step; each epoch's last batch is short
    assert len(steps) == 2 * -(-per_epoch // 16)  # one report per optimiser step
    assert cli_progress.unit_of("training") == "img"
