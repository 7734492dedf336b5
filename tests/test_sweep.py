"""Sweeps (issue 17, part 1): the search space's parsing, a 4-trial study that prunes, the best config's round
trip through `train --config`, and a sweep killed mid-trial (a real process, SIGKILL) that resumes.

Tiny real data: scikit-learn's digits at 8 px, 32 training images (1 step an epoch), a few epochs per trial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from engine.cli.main import build_parser, main
from engine.cli.train import build_config
from engine.config import RunConfig
from engine.runs.folder import Run, run_row, state_label
from engine.sweep.report import best_yaml, format_table, trial_rows
from engine.sweep.space import SweepError, parse_param, parse_space
from engine.sweep.study import SweepSettings, default_storage, open_storage, run_sweep, sweep_dir

ROOT = Path(__file__).resolve().parents[1]
BASE = RunConfig(
    dataset="builtin:digits",
    image_size=8,
    train_limit=32,
    val_fraction=0.05,
    test_fraction=0.05,
    epochs=2,
    batch_size=32,
    patience=0,
    scheduler="none",
    monitor="val_loss",  # continuous, so a trial that cannot learn is never tied with the median
)
TINY = ["--dataset", "builtin:digits", "--image-size", "8", "--train-limit", "32", "--batch-size", "32"]
TINY += ["--val-fraction", "0.05", "--test-fraction", "0.05"]


# --- the search space ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("lr", "is not NAME=KIND:VALUES"),
        ("foo=choice:1,2", "no config field has that name"),
        ("dataset=choice:builtin:digits", "it is fixed for the whole sweep"),
        ("lr=normal:0:1", "the kind 'normal' is not one of choice, uniform, loguniform"),
        ("lr=uniform:0:1", "field 'lr' must be > 0.0; got 0.0"),
        ("lr=loguniform:0:0.1", "a log scale needs LOW > 0"),
        ("lr=uniform:0.1:0.01", "LOW must be below HIGH"),
        ("lr=uniform:0.1", "two numbers separated by ':'"),
        ("batch_size=choice:32,big", "'big' is not an int"),
        ("batch_size=uniform:8.5:64", "takes whole numbers"),
        ("optimizer=choice:adamw,lion", "field 'optimizer' must be one of sgd, adam, adamw, nadam; got 'lion'"),
        ("optimizer=uniform:1:2", "is not a number; search it with choice"),
        ("hflip=choice:maybe", "is not a bool"),
        ("dropout=uniform:0:0.95", "field 'dropout' must be <= 0.9"),
        ("lr=choice:", "give at least one value"),
    ],
)
def test_a_bad_param_is_one_sentence_naming_it(text: str, says: str):
    with pytest.raises(SweepError) as e:
        parse_param(text)
    message = str(e.value)
    assert says in message
    assert "\n" not in message and message.endswith(".")


def test_params_parse_to_the_fields_types_and_round_trip_as_text():
    lr, bs, opt, flip = parse_space(
        ["lr=loguniform:1e-4:1e-2", "batch-size=choice:32,64", "optimizer=choice:sgd,adamw", "hflip=choice:true,false"]
    )
    assert (lr.kind, lr.low, lr.high, lr.log) == ("loguniform", 1e-4, 1e-2, True)
    assert bs.choices == (32, 64) and all(type(c) is int for c in bs.choices)
    assert opt.choices == ("sgd", "adamw") and flip.choices == (True, False)
    assert [parse_param(p.text()) for p in (lr, bs, opt, flip)] == [lr, bs, opt, flip]


def test_space_level_errors():
    with pytest.raises(SweepError, match="given twice"):
        parse_space(["lr=choice:0.1", "lr=choice:0.2"])
    with pytest.raises(SweepError, match="at least one --param"):
        parse_space([])
    with pytest.raises(SweepError, match="'lr' is a range"):
        parse_space(["lr=loguniform:1e-4:1e-2"], grid=True)
    # the base config's own rules across fields: a linear probe needs a pretrained backbone
    with pytest.raises(SweepError, match="linear probe needs a pretrained backbone"):
        parse_param("strategy=choice:linear_probe,finetune_all", BASE)


def test_cli_refuses_a_bad_param_with_exit_2_and_one_line(capsys):
    assert main(["sweep", *TINY, "--param", "lr=uniform:0:1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --param 'lr=uniform:0:1': field 'lr' must be > 0.0; got 0.0."


# --- a study that prunes, its table and its best config -----------------------------------------------


def test_four_trial_sweep_prunes_a_trial_and_its_run_folder_says_so(tmp_path: Path):
    # grid over a learning rate that learns and one that cannot (1e-7), at two seeds: after the first
    # finished trial, the median pruner ends a trial whose first epoch is worse than the median there
    settings = SweepSettings(
        base=BASE,
        params=parse_space(["lr=choice:0.02,0.0000001", "seed=choice:0,1"], BASE, grid=True),
        trials=4,
        grid=True,
        pruner="median",
        startup_trials=1,
        warmup_epochs=0,
    )
    root = tmp_path / "runs"
    study = run_sweep(settings, "prune-test", root, log=lambda m: None)
    states = [t.state for t in study.trials]
    assert len(states) == 4 and TrialState.PRUNED in states, states
    assert states.count(TrialState.COMPLETE) >= 1
    pruned = next(t for t in study.trials if t.state == TrialState.PRUNED)
    run = Run(pruned.user_attrs["run_path"])
    status = run.raw_status()
    assert status["state"] == "completed" and status["stop_reason"] == "pruned"
    assert status["epoch"] < BASE.epochs  # it trained fewer epochs than planned
    assert state_label(run.status()) == "completed (pruned)"
    assert run.config()["study"] == {"name": "prune-test", "trial": pruned.number}
    assert run_row(run)["study"] == "prune-test"
    assert (run.predictions / "val.npz").exists()  # a pruned trial is still a normal run Evaluate can open
    # the study is in the runs folder's SQLite file, and the table names every trial's state
    assert (root / "sweeps.db").exists()
    table = format_table(study)
    assert "pruned (epoch 1)" in table and "completed" in table and "val loss" in table
    rows = trial_rows(study)
    assert {r["state"] for r in rows} >= {"pruned", "completed"}

    # the best config as YAML, ready for `train --config`: it parses back to the best trial's config
    text = best_yaml(study, root)
    best = min((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert text.startswith(f"# best trial {best.number} of study prune-test")
    path = tmp_path / "best.yaml"
    path.write_text(text)
    cfg, _ = build_config(build_parser().parse_args(["train", "--config", str(path)]))
    trained = RunConfig.load(Path(best.user_attrs["run_path"]) / "config.json")
    assert cfg == trained.replace(name="")
    assert (cfg.lr, cfg.seed) == (best.params["lr"], best.params["seed"])


# --- killed mid-trial, then resumed -------------------------------------------------------------------


def _wait(predicate, timeout_s: float, what: str) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_sweep_resumes_keeping_completed_trials_and_reaching_its_target(tmp_path: Path, capsys):
    root = tmp_path / "runs"
    args = [
        "sweep",
        *TINY,
        "--epochs",
        "4",
        "--scheduler",
        "none",
        "--param",
        "lr=loguniform:0.001:0.02",
        "--trials",
        "2",
        "--pruner",
        "none",
        "--study",
        "killed",
        "--runs-dir",
        str(root),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    status = root / ".sweeps" / "killed" / "status.json"

    def mid_second_trial() -> bool:
        import json

        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        try:
            s = json.loads(status.read_text())
        except (OSError, ValueError):
            return False
        return s.get("done", 0) >= 1 and s.get("trial") is not None and s.get("epoch", 0) >= 1

    try:
        _wait(mid_second_trial, 240, "the second trial's first epoch")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    storage = open_storage(default_storage(root), heartbeat=False)
    before = optuna.load_study(study_name="killed", storage=storage)
    running = [t for t in before.trials if t.state == TrialState.RUNNING]
    kept = {t.number: t.user_attrs["run"] for t in before.trials if t.state == TrialState.COMPLETE}
    assert len(running) == 1 and len(kept) >= 1  # killed mid-trial, after a completed one
    killed = running[0]

    assert main(["sweep", "--study", "killed", "--runs-dir", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    after = optuna.load_study(study_name="killed", storage=open_storage(default_storage(root), heartbeat=False))
    by_number = {t.number: t for t in after.trials}
    assert sum(t.state == TrialState.COMPLETE for t in after.trials) == 2  # the target, reached
    for number, run_id in kept.items():  # completed trials kept, with their run folders
        assert by_number[number].state == TrialState.COMPLETE and by_number[number].user_attrs["run"] == run_id
    assert by_number[killed.number].state == TrialState.FAIL
    retry = [t for t in after.trials if t.system_attrs.get("fixed_params") or t.user_attrs.get("retry_of") is not None]
    assert [t.user_attrs.get("retry_of") for t in retry] == [killed.number]
    assert retry[0].params == killed.params  # its parameters were tried again
    assert Run(killed.user_attrs["run_path"]).raw_status()["state"] == "failed"
    assert "# best trial" in out and "completed" in out and "failed" in out


def test_a_kfold_trials_objective_is_the_mean_and_std_over_folds_of_each_folds_best_epoch(tmp_path: Path):
    from engine.runs.folder import atomic_write_json
    from engine.sweep.report import objective_text
    from engine.sweep.study import trial_value

    run = Run(tmp_path / "parent")
    for k, values in enumerate([[0.5, 0.8, 0.7], [0.6, 0.9, 0.4]]):  # best epochs: 0.8 and 0.9
        fold = Run(run.path / "folds" / f"fold{k + 1}")
        fold.path.mkdir(parents=True)
        atomic_write_json(fold.path / "config.json", {"config": {}})
        for epoch, v in enumerate(values, 1):
            fold.append_metrics({"epoch": epoch, "split": "val", "loss": 1 - v, "balanced_accuracy": v})
    mean, std = trial_value(run, BASE.replace(kfold=2, monitor="val_balanced_accuracy"), "val_balanced_accuracy")
    assert mean == pytest.approx(0.85) and std == pytest.approx(0.0707107, abs=1e-6)
    assert objective_text("val_balanced_accuracy", mean, std) == "85.00% ± 7.07%"
    assert trial_value(run, BASE.replace(kfold=2), "val_loss") == (pytest.approx(0.15), pytest.approx(0.0707107))


def test_the_successive_halving_pruner_ends_a_trial_that_cannot_learn(tmp_path: Path):
    """`--pruner halving` (Optuna's SuccessiveHalvingPruner, rungs at epochs 1 and 3): a trial whose epoch-1 val
    loss is not in the top third of the trials at that rung is pruned, and its run folder says so."""
    settings = SweepSettings(
        base=BASE.replace(epochs=3),
        params=parse_space(["lr=choice:0.02,0.0000001", "seed=choice:0,1,2"], BASE, grid=True),
        trials=6,
        grid=True,
        pruner="halving",
    )
    study = run_sweep(settings, "halving-test", tmp_path / "runs", log=lambda m: None)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert len(study.trials) == 6 and pruned, [t.state for t in study.trials]
    assert type(study.pruner).__name__ == "SuccessiveHalvingPruner"
    for t in pruned:
        status = Run(t.user_attrs["run_path"]).raw_status()
        assert status["stop_reason"] == "pruned" and status["epoch"] < 3
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert min(t.value for t in completed) < min(t.intermediate_values[1] for t in pruned)  # the pruned were worse


def test_stopping_a_sweep_stops_its_trial_and_a_second_start_tries_that_trial_again(tmp_path: Path):
    """The page's Stop (and `sweep --stop`) writes the sweep's STOP file: the trial under way stops at its next
    batch, no new trial starts, the sweep reads 'stopped'; started again, the stopped trial's parameters are
    queued first and the sweep reaches its target."""
    import threading

    from engine.sweep.study import read_progress, request_stop

    root = tmp_path / "runs"
    settings = SweepSettings(
        base=BASE.replace(epochs=60),  # long enough to be stopped mid-trial (an epoch takes tens of milliseconds)
        params=parse_space(["lr=choice:0.02,0.01"], BASE, grid=True),
        trials=2,
        grid=True,
        pruner="none",
    )
    done: list = []
    thread = threading.Thread(target=lambda: done.append(run_sweep(settings, "stop-test", root, log=lambda m: None)))
    thread.start()
    runs: list[Path] = []

    def second_epoch() -> bool:
        runs[:] = [p.parent for p in root.glob("*/status.json")]
        return any(Run(p).raw_status().get("epoch", 0) >= 2 for p in runs)

    _wait(second_epoch, 120, "the first trial's second epoch")
    request_stop("stop-test", root)
    thread.join(60)
    assert not thread.is_alive()
    study = done[0]
    assert len(study.trials) == 1 and study.trials[0].state == TrialState.FAIL
    assert study.trials[0].user_attrs["error"] == "stopped by the user"
    stopped = Run(study.trials[0].user_attrs["run_path"])
    assert stopped.raw_status()["state"] == "stopped" and stopped.raw_status()["epoch"] < 60
    assert read_progress("stop-test", root)["state"] == "stopped"
    assert not (sweep_dir("stop-test", root) / "STOP").exists()  # the next start is not stopped at once

    again = run_sweep(settings, "stop-test", root, log=lambda m: None)
    finished = [t for t in again.trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 2 and {t.params["lr"] for t in finished} == {0.02, 0.01}
    assert finished[0].params == study.trials[0].params  # the stopped trial's parameters went first
