"""Numbers across stop and resume: the step, the progress, the speed and the ETA a user is shown must be
the truth after any number of stop/resume cycles (issue 13, item 2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.runs.folder import Run
from engine.train import fit as fit_module
from engine.train import loop
from engine.train.fit import fit
from engine.train.jobs import prepare_run
from tests.test_train import tiny

STEPS_PER_EPOCH, EPOCHS = 19, 3  # 300 training images in batches of 16


class Recorder:
    """Counts the optimiser steps really taken, and every step a status write or a train record shows."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, run: Run) -> None:
        self.steps = 0  # optimiser steps taken, over every segment
        self.step_times: list[list[float]] = [[]]  # per segment: when each step ended
        self.shown: list[tuple[int, int, str]] = []  # (steps taken when written, step written, what wrote it)
        self.statuses: list[dict] = []
        real_step, real_write, real_append = loop.train_step, Run.write_status, Run.append_metrics

        def counted_step(*args, **kwargs):
            loss = real_step(*args, **kwargs)
            self.steps += 1
            self.step_times[-1].append(time.perf_counter())
            return loss

        def write_status(run_self: Run, **updates):
            out = real_write(run_self, **updates)
            if "step" in updates:
                self.shown.append((self.steps, updates["step"], f"status {updates.get('state', 'heartbeat')}"))
                self.statuses.append(dict(out))
            return out

        def append_metrics(run_self: Run, record: dict):
            self.shown.append((self.steps, record["step"], f"metrics {record['split']}"))
            return real_append(run_self, record)

        monkeypatch.setattr(loop, "train_step", counted_step)
        monkeypatch.setattr(Run, "write_status", write_status)
        monkeypatch.setattr(Run, "append_metrics", append_metrics)
        monkeypatch.setattr(fit_module, "HEARTBEAT_S", 0.0)  # every step writes status.json: nothing hides

    def new_segment(self) -> None:
        self.step_times.append([])


def test_step_progress_and_speed_are_right_across_stop_resume_cycles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = tiny(epochs=EPOCHS, batch_size=16, train_limit=300)
    run = prepare_run(cfg, tmp_path / "runs")
    rec = Recorder(monkeypatch, run)
    bars: list[tuple[int, int]] = []  # what the progress callback reported, (done, total)

    def stop_at(step: int):
        def progress(done: int, total: int, stage: str) -> None:
            if stage == "training":
                bars.append((done, total))
                if rec.steps == step:
                    run.request_stop()

        return progress

    # stop mid epoch 2, twice in the same epoch, then mid epoch 3, then run to the end
    for stop_step in (25, 30, 45):
        out = fit(cfg, run, resume=rec.steps > 0, log=lambda m: None, progress=stop_at(stop_step))
        assert out["state"] == "stopped" and out["step"] == stop_step == rec.steps
        assert run.raw_status()["step"] == stop_step
        rec.new_segment()
    summary = fit(cfg, run, resume=True, log=lambda m: None, progress=stop_at(-1))
    assert rec.steps == STEPS_PER_EPOCH * EPOCHS == summary["steps"]

    # every step written anywhere is the number of optimiser steps taken when it was written
    wrong = [(taken, shown, what) for taken, shown, what in rec.shown if shown != taken]
    assert not wrong, f"(steps taken, step shown, by): {wrong[:5]}"
    written = [shown for _, shown, _ in rec.shown]
    assert written == sorted(written)  # monotone: the bar never jumps back
    # the progress callback counts the same work the bar's total counts, and never goes back either
    assert all(total == bars[0][1] for _, total in bars)
    assert [d for d, _ in bars] == sorted(d for d, _ in bars) and bars[-1][0] == bars[-1][1]

    # the speed the trainer reports for the live panel is the speed it measured in this segment
    for status in rec.statuses:
        if status.get("state") == "running" and status.get("img_per_s"):
            assert status["segment_step"] <= status["step"]
    last_segment = rec.step_times[-1]
    measured = 16 * (len(last_segment) - 1) / (last_segment[-1] - last_segment[0])
    reported = [s["img_per_s"] for s in rec.statuses if s.get("img_per_s") and s["step"] > 45 + 5]
    assert reported and all(measured / 3 < r < measured * 3 for r in reported), (measured, reported[-5:])
