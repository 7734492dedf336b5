"""The Train page's Sweep section (AppTest): a study in the runs folder is shown as its trials table, the
best trial with its link to Evaluate and Optuna's figures; Start sends the editor's space and budget to
the background job, and a bad setting is one sentence in an error box."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

import app.train.sweep as page_sweep
from engine.config import RunConfig
from engine.runs.folder import atomic_write_json
from engine.sweep.study import default_storage, open_storage
from tests.test_page_train import open_train

SPACE = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "batch_size": CategoricalDistribution([32, 64, 128])}


def make_study(root: Path, name: str = "demo-sweep") -> None:
    """A finished 3-trial study as a sweep leaves it: two completed trials, one pruned after epoch 1."""
    study = optuna.create_study(
        study_name=name, storage=open_storage(default_storage(root), heartbeat=False), direction="maximize"
    )
    base = RunConfig(dataset="builtin:digits", epochs=3)
    for key, value in {
        "params": ["lr=loguniform:0.0001:0.01", "batch_size=choice:32,64,128"],
        "base": base.to_dict(),
        "trials": 3,
        "monitor": "val_balanced_accuracy",
    }.items():
        study.set_user_attr(key, value)
    trials = [
        ({"lr": 0.003, "batch_size": 32}, 0.9123, TrialState.COMPLETE, {}),
        ({"lr": 0.0002, "batch_size": 128}, None, TrialState.PRUNED, {1: 0.2}),
        ({"lr": 0.008, "batch_size": 64}, 0.8, TrialState.COMPLETE, {}),
    ]
    for i, (params, value, state, steps) in enumerate(trials):
        study.add_trial(
            create_trial(
                params=params,
                distributions=SPACE,
                value=value,
                state=state,
                intermediate_values=steps,
                user_attrs={"run": f"run-{i}", "seconds": 12.5},
            )
        )
    atomic_write_json(
        root / ".sweeps" / name / "status.json",
        {"study": name, "state": "completed", "target": 3, "done": 3, "monitor": "val_balanced_accuracy",
         "best": 0.9123, "best_trial": 0, "pid": None},
    )  # fmt: skip


def test_the_sweep_section_shows_the_trials_the_best_trial_and_the_figures(tmp_path: Path):
    make_study(tmp_path / "runs")
    at = open_train()
    assert "Sweep" in [h.value for h in at.subheader]
    assert at.selectbox(key=page_sweep.K_PICK).value == "demo-sweep"
    assert any("3 / 3 trials" in p.proto.text and "91.23%" in p.proto.text for p in at.get("progress"))
    table = next(d.value for d in at.dataframe if "trial" in d.value.columns)
    assert list(table.columns) == ["trial", "state", "lr", "batch_size", "val balanced accuracy", "seconds", "run"]
    assert list(table["state"]) == ["completed", "pruned (epoch 1)", "completed"]
    assert list(table["val balanced accuracy"]) == ["91.23%", "20.00%", "80.00%"]
    assert list(table["lr"]) == ["0.003", "0.0002", "0.008"]
    assert any("Best: trial 0" in m.value and "91.23%" in m.value for m in at.markdown)
    links = [e for e in at.get("page_link") if "Evaluate the best trial" in e.proto.label]
    assert links and "run=run-0" in json.dumps(str(links[0].proto))
    # history, parallel coordinates, importances (2 completed trials, 2 fields) and slices
    assert len(at.get("plotly_chart")) == 4
    assert not at.exception and not at.error


def test_start_sends_the_space_and_budget_to_a_background_sweep_and_a_bad_name_is_one_sentence(
    tmp_path: Path, monkeypatch
):
    started = []
    monkeypatch.setattr(page_sweep, "start_background", lambda settings, name: started.append((settings, name)))
    at = open_train()
    at.number_input(key=page_sweep.K_TRIALS).set_value(5)
    at.number_input(key=page_sweep.K_BUDGET).set_value(30.0)
    at.text_input(key=page_sweep.K_NAME).set_value("bad name!")
    at.button(key="train.sweep.start").click().run()
    assert [e.value for e in at.error] == [
        "--study 'bad name!' is not a usable name; use letters, digits, '.', '_' or '-' (up to 64)."
    ]
    assert started == []
    at.text_input(key=page_sweep.K_NAME).set_value("lr-search")
    at.button(key="train.sweep.start").click().run()
    assert not at.exception and not at.error
    ((settings, name),) = started
    assert name == "lr-search"
    assert [p.text() for p in settings.params] == ["lr=loguniform:0.0001:0.01", "batch_size=choice:32,64,128"]
    assert (settings.trials, settings.time_budget_s, settings.pruner) == (5, 1800.0, "median")
    assert settings.base.dataset == "builtin:digits"


def test_the_live_panel_says_a_pruned_trial_was_pruned_by_its_sweep():
    from app.train.live import progress_text

    status = {"display_state": "completed", "epoch": 1, "epochs": 3, "step": 2, "total_steps": 6}
    assert (
        progress_text(status, None, {"stopped_early": "pruned"}) == "Completed: 1 epoch, 2 steps · pruned by its sweep"
    )
