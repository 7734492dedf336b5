"""The Train page, driven through Streamlit's AppTest: the form, the preset, starting a real background
run and following it, bad input, the augmentation preview, the runs table, comparison and delete."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.train import live as train_live
from engine.config import GROUPS, RunConfig
from engine.runs.folder import Run, atomic_write_json, list_runs, now_iso
from engine.train import jobs
from tests.conftest import make_class_folders, needs_fashion

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
WAIT_S = 150  # a 1-epoch digits run takes ~20 s alone; leave room for a busy 2-core machine


def open_train(dataset: str | None = "builtin:digits", run: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    if dataset:
        at.query_params["dataset"] = dataset
    if run:
        at.query_params["run"] = run
    at.run()
    at.switch_page("pages/training.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Train"
    return at


def number(at: AppTest, field: str):
    return at.number_input(key=f"train.f.{field}")


def form_value(at: AppTest, name: str):
    """A field's value as the form holds it (the same mapping as app/train/values.read_field)."""
    from app.train.values import AUG_ON, OTHER_MODEL, default

    ss = at.session_state
    if name == "model":
        pick = ss["train.model_pick"]
        return ss["train.model_other"] if pick == OTHER_MODEL else pick
    if name in AUG_ON:
        return ss[f"train.f.{name}"] if ss[f"train.on.{name}"] else default(name)
    if name == "class_weights":
        return [float(w) for w in ss["train.f.class_weights"].split(",") if w.strip()]
    return ss[f"train.f.{name}"]


def wait_for(run: Run, states: tuple[str, ...], timeout: float = WAIT_S, step: bool = False) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = run.status()
        if st["display_state"] in states and (not step or (st.get("step") or 0) > 0):
            return st
        if st["display_state"].startswith("failed"):
            break
        time.sleep(0.5)
    log = (run.path / "train.log").read_text() if (run.path / "train.log").exists() else ""
    raise AssertionError(f"run {run.id} is {run.status()} after {timeout} s, not {states}; log:\n{log[-3000:]}")


def live_progress(at: AppTest) -> list[str]:
    """Texts of the progress bars the live panel draws (loading bars are emptied, so not counted)."""
    return [p.proto.text for p in at.get("progress")]


def run_picker(at: AppTest):
    """The runs table's "Run" selectbox (its key carries the active run, so it follows it)."""
    return next(s for s in at.selectbox if s.key and s.key.startswith("train.runs.pick"))


def runs_frame(at: AppTest):
    """The runs table: the page's table with a Run and an Id column (the Sweep section's tables come first)."""
    frames = [d.value for d in at.dataframe if {"Run", "Id"} <= set(d.value.columns)]
    assert frames, "no runs table"
    return frames[0]


def fake_run(
    name: str = "", state: str = "completed", scores: tuple[float, ...] = (0.5, 0.7, 0.8), epochs: int = 3
) -> Run:
    """A run folder as the trainer writes it (contract 2), without training."""
    run = jobs.prepare_run(RunConfig(dataset="builtin:digits", model="small_cnn", epochs=epochs, name=name))
    for e, score in enumerate(scores, 1):
        run.append_metrics(
            {
                "epoch": e,
                "step": 10 * e,
                "split": "val",
                "loss": 1.0 / e,
                "accuracy": score,
                "balanced_accuracy": score,
                "macro_f1": score,
                "train_loss": 1.2 / e,
                "lr": 1e-3,
                "img_per_s": 100.0 + e,
                "time": now_iso(),
            }
        )
    best = max(range(len(scores)), key=lambda i: scores[i]) + 1 if scores else None
    if state == "completed":
        val = {"accuracy": max(scores), "balanced_accuracy": max(scores), "macro_f1": max(scores)}
        atomic_write_json(
            run.path / "summary.json",
            {
                "best_epoch": best,
                "monitor": "val_balanced_accuracy",
                "best": val,
                "final": {"val": val, "test": val},
                "wall_seconds": 12.5,
                "train_img_per_s": 101.0,
            },
        )
    run.write_status(
        state=state,
        epoch=len(scores),
        epochs=epochs,
        step=10 * len(scores),
        total_steps=10 * epochs,
        started_at=now_iso(),
        pid=None,
    )
    return run


# --- the form -------------------------------------------------------------------------------------


def test_form_renders_grouped_and_prefilled_for_the_active_dataset():
    at = open_train("builtin:digits")
    assert not at.error
    labels = [e.label for e in at.expander]
    for title in ("Data", "Model", "Imbalance", "Augmentation", "Optimisation", "Stopping", "Compute"):
        assert title in labels
    captions = " ".join(c.value for c in at.caption)
    for explanation in GROUPS.values():
        assert explanation in captions  # one line per group
    assert at.selectbox(key="train.f.dataset").value == "builtin:digits"
    # every RunConfig field has a widget
    keys = {w.key for w in [*at.number_input, *at.selectbox, *at.checkbox, *at.text_input, *at.toggle, *at.slider]}
    from dataclasses import fields

    for f in fields(RunConfig):
        assert f"train.f.{f.name}" in keys or f.name == "model", f.name
    # dataset-aware defaults, with their reasons
    assert number(at, "image_size").value == 8
    assert at.selectbox(key="train.model_pick").value == "small_cnn"
    assert at.selectbox(key="train.f.strategy").value == "scratch"
    assert number(at, "patience").value == 0  # the epochs are planned to the time budget: no early stop
    assert any("patience 0: the epochs fill the time budget" in m.value for m in at.markdown)
    assert any(e.label.startswith("Prefilled for this dataset") for e in at.expander)
    assert any("image_size 8" in m.value for m in at.markdown)
    # the imbalance choice is pre-selected from the statistics, with the reason
    assert at.selectbox(key="train.f.imbalance").value == "none"
    assert any("Suggested: **none**" in i.value and "balanced" in i.value for i in at.info)


@pytest.mark.slow
@needs_fashion
def test_form_defaults_to_the_default_dataset():
    at = open_train(dataset=None)
    assert not at.error
    assert at.selectbox(key="train.f.dataset").value == "builtin:fashion-mnist"
    assert number(at, "image_size").value == 28
    assert number(at, "time_budget_s").value == 600.0  # issue 16: epochs planned to a 10-minute CPU budget
    planned = [m.value for m in at.markdown if "fit in about" in m.value or "ends the run part-way" in m.value]
    # not timed yet in this session: the size rule's 8 epochs until the estimate's probe has timed small_resnet
    assert planned or (
        number(at, "epochs").value == 8 and any("small_resnet is being timed" in m.value for m in at.markdown)
    )


def test_the_suggested_epochs_are_planned_to_the_time_budget_field_and_follow_it():
    """Issue 16 item 1 on the form: the epochs are planned to the Time budget field (600 s on a CPU) from the
    timed probe of the suggested model, with the reason; a new budget plans them again."""
    from engine.config import RunConfig
    from engine.data import quick_stats
    from engine.train.recipes import plan_epochs
    from engine.train.timing import estimate_run, measure_throughput

    stats = quick_stats("builtin:digits")
    cfg = RunConfig(model="small_cnn", image_size=8, strategy="scratch", patience=5, imbalance="none")
    tp = measure_throughput(cfg, 8, 1, 10)  # the probe the estimate above Start runs (cached): the plan reads it
    at = open_train("builtin:digits")
    assert number(at, "time_budget_s").value == 600.0
    epochs, reason = plan_epochs(cfg, stats, 600.0, tp)
    assert number(at, "epochs").value == epochs
    assert any(reason.split(" (")[0] in m.value for m in at.markdown), reason
    # a budget a few epochs long at the probed speed (a fixed 30 s already fits MAX_EPOCHS of 8 px digits when
    # the cached figures are a finished run's, faster than the probe's)
    few = round(3 * estimate_run(cfg.replace(epochs=1), stats, tp).seconds_per_epoch + 1.0, 1)
    number(at, "time_budget_s").set_value(few).run()
    assert not at.exception and not at.error
    assert number(at, "epochs").value == plan_epochs(cfg, stats, few, tp)[0] < epochs


def test_edits_survive_a_page_switch_and_a_dataset_change(tmp_path: Path):
    pets = make_class_folders(tmp_path / "pets", {"cat": 30, "dog": 6})  # 16x12 images, 5:1 with a tiny minority
    at = open_train("builtin:digits")
    number(at, "epochs").set_value(3).run()
    at.switch_page("pages/dataset.py").run()
    at.switch_page("pages/training.py").run()
    assert number(at, "epochs").value == 3  # widget state is dropped on a page switch; the form restores it
    at.query_params["dataset"] = str(pets)  # the active dataset changes (URL, Dataset page or the field)
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="train.f.dataset").value == str(pets)
    assert number(at, "epochs").value == 3  # the user's choice stays
    assert number(at, "image_size").value == 12  # the suggestions follow the new dataset
    assert at.selectbox(key="train.f.imbalance").value == "oversample"
    assert any("Suggested: **oversample**" in i.value and "'dog'" in i.value for i in at.info)


def test_a_chosen_pretrained_model_steers_the_suggestions_for_a_new_dataset(tmp_path: Path):
    """Issue 14, item 9 on the page: the user's model and pretrained choice win over the small-image defaults,
    and the reasons name the model used (as `train --model tf_efficientnet_lite0 --pretrained` does)."""
    pets = make_class_folders(tmp_path / "pets", {"cat": 30, "dog": 6})  # 16x12 images: small_cnn territory
    at = open_train("builtin:digits")
    at.selectbox(key="train.model_pick").set_value("tf_efficientnet_lite0").run()
    at.checkbox(key="train.f.pretrained").check().run()
    at.query_params["dataset"] = str(pets)
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="train.model_pick").value == "tf_efficientnet_lite0"
    assert at.checkbox(key="train.f.pretrained").value is True
    assert at.selectbox(key="train.f.strategy").value != "scratch"  # pretrained weights are used, not thrown away
    assert number(at, "image_size").value >= 64  # a size the pretrained model was made for, not the images' 12 px
    reasons = " ".join(m.value for m in at.markdown)
    assert "small_cnn" not in reasons and "tf_efficientnet_lite0" in reasons


@needs_fashion
def test_demo_preset_fills_the_form_and_switches_to_fashion_mnist():
    at = open_train("builtin:digits")
    at.button(key="train.demo").click().run()
    assert not at.exception and not at.error
    assert at.selectbox(key="train.f.dataset").value == "builtin:fashion-mnist"
    assert at.query_params["dataset"] == "builtin:fashion-mnist"
    from engine.train.recipes import apply_preset

    preset = apply_preset("demo")
    assert number(at, "epochs").value == preset["epochs"]
    assert number(at, "batch_size").value == preset["batch_size"]
    assert number(at, "lr").value == pytest.approx(preset["lr"])
    assert number(at, "image_size").value == preset["image_size"]
    assert at.selectbox(key="train.model_pick").value == preset["model"]
    # every field shows what `train --preset demo` trains: the RunConfig defaults plus the preset
    expected = RunConfig(**{**RunConfig().to_dict(), **preset}).to_dict()
    assert {name: form_value(at, name) for name in expected} == expected


def test_quick_recipe_is_for_the_selected_dataset_and_keeps_it():
    """Issue 13 item 10: "Use the quick preset" switched the dataset to Fashion-MNIST without saying so."""
    from engine.cli.main import build_parser
    from engine.cli.train import build_config

    at = open_train("builtin:digits")
    at.button(key="train.preset").click().run()
    assert not at.exception and not at.error
    assert at.selectbox(key="train.f.dataset").value == "builtin:digits"
    assert at.query_params["dataset"] == "builtin:digits"
    # the form holds what `train --preset quick --dataset builtin:digits` trains
    cli, _ = build_config(build_parser().parse_args(["train", "--preset", "quick", "--dataset", "builtin:digits"]))
    assert {name: form_value(at, name) for name in cli.to_dict()} == cli.to_dict()
    assert number(at, "image_size").value == 8
    assert any("quick recipe" in e.label or "Prefilled" in e.label for e in at.expander)
    demo = at.button(key="train.demo")
    assert "Fashion-MNIST" in demo.label  # the demo is a separate, labelled choice


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, named", [("lr", 0.0, "'lr'"), ("image_size", 4, "'image_size'")])
def test_invalid_value_shows_the_config_error_and_starts_nothing(field, value, named):
    at = open_train("builtin:digits")
    number(at, field).set_value(value).run()
    at.button(key="train.start").click().run()
    assert not at.exception  # no traceback
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and named in errors[0] and errors[0].startswith("Field")
    assert list_runs() == []
    assert number(at, field).value == value  # nothing the user entered is lost
    assert at.button(key="train.start")  # the form is still there to fix it


def test_bad_class_weights_and_unknown_model_are_one_sentence_errors():
    at = open_train("builtin:digits")
    at.selectbox(key="train.f.imbalance").set_value("weighted_loss").run()
    at.text_input(key="train.f.class_weights").input("1, x").run()
    at.button(key="train.start").click().run()
    assert not at.exception
    assert "class_weights" in at.error[0].value
    at.text_input(key="train.f.class_weights").input("").run()
    at.selectbox(key="train.model_pick").set_value("other timm model…").run()
    at.text_input(key="train.model_other").input("resnet1888").run()
    at.button(key="train.start").click().run()
    assert not at.exception
    assert "Unknown model 'resnet1888'" in at.error[0].value
    assert list_runs() == []


def test_unreadable_dataset_is_shown_and_blocks_start(tmp_path: Path):
    missing = str(tmp_path / "nowhere")
    at = open_train(missing)
    assert not at.exception
    assert any("nowhere" in e.value for e in at.error)
    at.button(key="train.start").click().run()
    assert not at.exception
    assert list_runs() == []


def test_dataset_and_weights_paths_outside_the_data_roots_are_refused(tmp_path: Path):
    outside = tmp_path.parent / "elsewhere"  # the test's roots are tmp_path only (tests/conftest.py)
    outside.mkdir(exist_ok=True)
    at = open_train(str(outside))
    assert any("outside the allowed data roots" in e.value for e in at.error)
    at.button(key="train.start").click().run()
    assert not at.exception and list_runs() == []
    at = open_train("builtin:digits")
    at.text_input(key="train.f.weights_file").set_value(str(outside / "w.safetensors")).run()
    at.button(key="train.start").click().run()
    assert not at.exception and list_runs() == []
    assert any("outside the allowed data roots" in e.value and "w.safetensors" in e.value for e in at.error)


# --- augmentation preview -------------------------------------------------------------------------


def test_augmentation_preview_follows_the_toggles():
    at = open_train("builtin:digits")
    assert at.toggle(key="train.f.hflip").value is True
    assert len(at.image) == 4  # 4 training images, each a row: original + 4 draws
    assert all(len(row.value) == 5 for row in at.image)
    assert at.toggle(key="train.on.translate").value is True  # the small-image recipe's random shifts
    at.toggle(key="train.f.hflip").set_value(False).run()
    assert len(at.image) == 4  # the shifts alone still draw
    at.toggle(key="train.on.translate").set_value(False).run()
    assert len(at.image) == 0
    assert any("All augmentations are off" in c.value for c in at.caption)
    at.toggle(key="train.on.rotation").set_value(True).run()
    assert not at.exception
    assert len(at.image) == 4
    at.slider(key="train.f.rotation").set_value(30.0).run()
    assert len(at.image) == 4
    assert form_value(at, "rotation") == 30.0 and form_value(at, "hflip") is False  # what Start would train with
    at.toggle(key="train.on.rotation").set_value(False).run()
    assert form_value(at, "rotation") == 0.0  # off is the field's identity value, the strength is kept for later
    assert at.slider(key="train.f.rotation").value == 30.0 and at.slider(key="train.f.rotation").disabled


# --- a real background run ------------------------------------------------------------------------


@pytest.mark.slow
def test_start_runs_a_real_background_job_and_the_table_shows_it():
    at = open_train("builtin:digits")
    at.selectbox(key="train.model_pick").set_value("small_cnn").run()
    number(at, "image_size").set_value(8).run()
    number(at, "epochs").set_value(1).run()
    number(at, "batch_size").set_value(64).run()
    at.button(key="train.start").click().run()
    assert not at.exception and not at.error
    runs = list_runs()
    assert len(runs) == 1
    run = runs[0]
    try:
        cfg = run.config()["config"]
        assert (cfg["dataset"], cfg["model"], cfg["image_size"], cfg["epochs"], cfg["batch_size"]) == (
            "builtin:digits",
            "small_cnn",
            8,
            1,
            64,
        )
        assert at.query_params["run"] == run.id  # the started run is the active one
        bars = live_progress(at)
        assert bars and bars[0].startswith(("Queued", "Running")), bars
        assert at.button(key="train.live.stop")
        # a reload (a fresh session with ?run=) reattaches to the running job
        again = open_train("builtin:digits", run=run.id)
        assert live_progress(again)
        wait_for(run, ("completed",))
    finally:
        if run.status()["display_state"] in ("queued", "running"):
            jobs.stop(run)
            wait_for(run, ("stopped", "completed"), timeout=60)
    at.run()
    assert not at.exception
    df = runs_frame(at)
    row = df[df["Id"] == run.id].iloc[0]
    assert row["State"] == "completed"
    assert row["Best"].endswith("%") and 0.0 < float(row["Best"].rstrip("%")) <= 100.0  # a rate, as a percentage
    assert row["Best metric"] == "bal. acc."
    assert live_progress(at)[0].startswith("Completed")
    assert {m.label for m in at.metric} >= {"Images/s", "Best bal. acc.", "Test bal. acc.", "Duration"}


@pytest.mark.slow
def test_stop_and_resume_from_the_live_panel():
    at = open_train("builtin:digits")
    number(at, "epochs").set_value(3).run()
    number(at, "batch_size").set_value(32).run()  # 40 steps an epoch: room to stop mid-run, short to finish
    at.button(key="train.start").click().run()
    run = list_runs()[0]
    try:
        wait_for(run, ("running",), step=True)
        at.run()
        at.button(key="train.live.stop").click().run()
        assert not at.exception
        wait_for(run, ("stopped", "completed"))
        at.run()
        if run.status()["display_state"] == "completed":
            pytest.skip("the run finished before the stop request arrived (very fast machine)")
        assert live_progress(at)[0].startswith("Stopped")
        at.button(key="train.live.resume").click().run()
        assert not at.exception and not at.error
        assert run.status()["display_state"] in ("queued", "running", "completed")
        wait_for(run, ("completed",))
    finally:
        if run.status()["display_state"] in ("queued", "running"):
            jobs.stop(run)
            wait_for(run, ("stopped", "completed"), timeout=60)
    epochs = [r["epoch"] for r in run.metrics() if r["split"] == "val"]
    assert epochs == [1, 2, 3]  # resumed where it stopped, no epoch done twice


# --- runs table, comparison, delete ---------------------------------------------------------------


def test_runs_table_and_comparison_of_several_runs():
    a = fake_run("baseline", scores=(0.5, 0.6, 0.7))
    b = fake_run("wider", scores=(0.6, 0.9, 0.8))
    c = fake_run("half-way", state="running", scores=(0.4,), epochs=5)
    at = open_train("builtin:digits")
    df = runs_frame(at)
    assert set(df["Run"]) == {"baseline", "wider", "half-way"}
    by_name = df.set_index("Run")
    assert by_name.loc["wider", "Best"] == "90.00%"  # balanced accuracy is a rate: a percentage, as everywhere
    assert by_name.loc["wider", "Best epoch"] == "2"
    assert by_name.loc["half-way", "Best"] == "40.00%"  # running: best so far, from the records
    assert by_name.loc["half-way", "Best epoch"] == "1"
    assert by_name.loc["half-way", "State"] == "running"
    assert by_name.loc["baseline", "Duration"] == "12s"
    compare = at.multiselect(key="train.runs.compare")
    assert set(compare.value) == {a.id, b.id, c.id}
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # val loss and the chosen metric, one line per run
    at.run()
    assert set(at.multiselect(key="train.runs.compare").value) == {a.id, b.id, c.id}
    compare.set_value([a.id, b.id]).run()
    assert not at.exception
    fake_run("newer", scores=(0.3, 0.5))
    at.run()
    assert set(at.multiselect(key="train.runs.compare").value) == {a.id, b.id}  # the user's choice is kept
    assert "newer" in at.multiselect(key="train.runs.compare").options
    at.selectbox(key="train.runs.metric").set_value("macro_f1").run()
    assert not at.exception


def test_choosing_a_run_makes_it_active_and_shows_it_live():
    run = fake_run("pick-me")
    at = open_train("builtin:digits")
    assert any("No run selected" in i.value for i in at.info)
    run_picker(at).set_value(run.id).run()
    assert at.query_params["run"] == run.id
    assert live_progress(at)[0].startswith("Completed")
    assert any(m.label == "Best bal. acc." and m.value == "80.00%" for m in at.metric)


def test_a_run_its_time_budget_ended_says_so_on_its_badge_and_in_the_table():
    """Issue 14, item 10 on the page: the live panel's badge and the runs table say `completed (time budget)`."""
    run = fake_run("budgeted", scores=(0.5,), epochs=3)
    run.write_status(stop_reason="time budget")
    at = open_train("builtin:digits", run=run.id)
    assert not at.exception
    badges = [m.value for m in at.markdown if "-badge[" in m.value]  # st.badge is markdown's :color-badge[...]
    assert any("-badge[completed (time budget)]" in b for b in badges), badges
    assert runs_frame(at).set_index("Run").loc["budgeted", "State"] == "completed (time budget)"


def test_delete_asks_for_confirmation_then_removes_the_folder():
    run = fake_run("to-delete")
    keep = fake_run("to-keep")
    at = open_train("builtin:digits", run=run.id)
    assert run_picker(at).value == run.id
    at.button(key="train.runs.delete").click().run()
    assert any("to-delete" in w.value for w in at.warning)  # asks first
    assert run.path.exists()
    at.button(key="train.runs.delete_no").click().run()
    assert not [w for w in at.warning if "Delete the run" in w.value] and run.path.exists()
    at.button(key="train.runs.delete").click().run()
    at.button(key="train.runs.delete_yes").click().run()
    assert not at.exception and not at.error
    assert not run.path.exists() and keep.path.exists()
    assert "run" not in at.query_params  # it was the active run
    assert list(runs_frame(at)["Run"]) == ["to-keep"]


def test_a_running_run_cannot_be_deleted():
    run = fake_run("busy", state="running", scores=(0.5,))
    run.write_status(pid=__import__("os").getpid())  # alive, so not shown as crashed
    at = open_train("builtin:digits", run=run.id)
    assert at.button(key="train.runs.delete").disabled


# --- the live panel's numbers (no Streamlit) -------------------------------------------------------


def test_eta_and_speed_helpers():
    now = time.time()
    status = {"step": 50, "total_steps": 150, "started_at": None}
    rate = train_live.steps_per_second(status, [], now, (now - 10, 30))  # watched: 20 steps in 10 s
    assert rate == pytest.approx(2.0)
    assert train_live.eta_seconds(status, rate) == pytest.approx(50.0)
    started = {"step": 50, "total_steps": 150, "started_at": now_iso()}
    assert train_live.eta_seconds(started, rate, budget_s=20, now=time.time()) <= 20.5  # a time budget caps it
    assert train_live.eta_seconds({"step": 0, "total_steps": None}, 1.0) is None
    assert train_live.fmt_duration(5) == "5s" and train_live.fmt_duration(65) == "1m 05s"
    assert train_live.fmt_duration(3720) == "1h 02m"


def test_best_so_far_respects_the_direction_of_the_metric():
    recs = [
        {"epoch": 1, "split": "val", "loss": 0.5, "hter": 0.2, "balanced_accuracy": 0.7},
        {"epoch": 2, "split": "val", "loss": 0.3, "hter": 0.3, "balanced_accuracy": 0.9},
    ]
    assert train_live.best_so_far(recs, "val_balanced_accuracy") == (0.9, 2)
    assert train_live.best_so_far(recs, "val_loss") == (0.3, 2)
    assert train_live.best_so_far(recs, "val_hter") == (0.2, 1)
    assert train_live.monitor_of({"monitor": "auto"}, recs, None) == "val_balanced_accuracy"
    assert train_live.monitor_of({"monitor": "val_auc"}, recs, None) == "val_auc"


def test_the_active_run_survives_its_state_changing():
    """Regression: the run picker showed the state in its labels, and the browser sends a selectbox's
    shown text back, so a run that finished while selected made the page lose it."""
    import os

    run = fake_run("changing", state="running", scores=(0.5,))
    run.write_status(pid=os.getpid())
    at = open_train("builtin:digits", run=run.id)
    assert live_progress(at)[0].startswith("Running")
    shown = run_picker(at).options
    run.write_status(state="completed")
    at.run()
    assert not at.exception
    assert run_picker(at).options == shown  # what the browser sends back still names the same run
    assert at.query_params["run"] == run.id
    assert live_progress(at)[0].startswith("Completed")


def test_progress_text_names_the_epoch_under_way():
    base = {"epochs": 3, "total_steps": 300, "started_at": None}
    text = train_live.progress_text
    assert (
        text({**base, "display_state": "stopped", "epoch": 0, "step": 72}, None)
        == "Stopped in epoch 1 of 3 · step 72 of 100 in this epoch · 72 of 300 steps in all"
    )
    assert text({**base, "display_state": "running", "epoch": 1, "step": 150}, 30.0).startswith("Running: epoch 2 of 3")
    assert text(
        {**base, "display_state": "completed", "epoch": 3, "step": 300}, None, {"stopped_early": "patience"}
    ).endswith("stopped early: no improvement")
    assert text({**base, "display_state": "queued", "epoch": 0, "step": 0}, None).startswith("Queued")


def test_lr_finder_plots_loss_vs_lr_and_copies_the_suggestion_into_the_form():
    at = open_train("builtin:digits")
    at.selectbox(key="train.model_pick").set_value("small_cnn").run()
    number(at, "image_size").set_value(8).run()
    number(at, "batch_size").set_value(32).run()
    at.button(key="train.lrfind").click().run()
    assert not at.exception and not at.error
    result = at.session_state["train.lrfind.result"]
    assert len(result["lrs"]) > 10 and result["lrs"] == sorted(result["lrs"])
    assert at.get("plotly_chart")  # the loss-vs-lr chart is drawn
    at.button(key="train.lrfind.use").click().run()
    assert form_value(at, "lr") == pytest.approx(float(f"{result['suggested_lr']:.3g}"))
    assert list_runs() == []  # the range test saves nothing


def test_use_all_gpus_sets_one_ddp_process_per_gpu(monkeypatch: pytest.MonkeyPatch):
    import app.train.form

    monkeypatch.setattr(app.train.form, "gpu_count", lambda: 4)  # this machine has none; the page asks here
    at = open_train("builtin:digits")
    assert any("4 GPUs visible" in c.value for c in at.caption)
    assert number(at, "nproc").value == 1
    at.button(key="train.all_gpus").click().run()
    assert number(at, "nproc").value == 4


def test_ddp_processes_field_launches_a_torchrun_job_from_the_page():
    """On this CPU machine `DDP processes = 2` runs two gloo processes; on a GPU machine, one per GPU."""
    at = open_train("builtin:digits")
    assert not [b for b in at.button if b.key == "train.all_gpus"]  # no GPUs here: no such shortcut
    at.selectbox(key="train.model_pick").set_value("small_cnn").run()
    for name, value in (("image_size", 8), ("epochs", 3), ("batch_size", 64), ("nproc", 2)):  # 3: label smoothing
        number(at, name).set_value(value).run()
    at.button(key="train.start").click().run()
    assert not at.exception and not at.error
    run = list_runs()[0]
    try:
        wait_for(run, ("completed",))
    finally:
        if run.status()["display_state"] in ("queued", "running"):
            jobs.stop(run)
            wait_for(run, ("stopped", "completed"), timeout=60)
    assert run.config()["world_size"] == 2 and run.config()["config"]["nproc"] == 2
    assert run.summary()["final"]["test"]["accuracy"] > 0.5


def test_speed_and_eta_after_a_resume_count_only_the_resumed_work():
    """Issue 13 item 2: 33 steps done, stopped, resumed 10 s ago, 10 steps since: 1 step/s, not 43 / 10."""
    now = time.time()
    status = {
        "display_state": "running",
        "state": "running",
        "epoch": 1,
        "epochs": 3,
        "step": 43,
        "total_steps": 100,
        "started_at": now_iso(),
        "segment_start": now - 10.0,
        "segment_step": 33,
        "heartbeat": now,
        "img_per_s": 160.0,
        "deadline": None,
    }
    rate = train_live.steps_per_second(status, [], now, None)
    assert rate == pytest.approx(1.0)
    assert train_live.eta_seconds(status, rate, now=now) == pytest.approx(57.0)
    # a session that watched the run before the stop must not count the steps done before it either
    assert train_live.steps_per_second(status, [], now, (now - 60.0, 0)) == pytest.approx(1.0)
    # the time budget's end comes from the trainer (it counts training time, not the time stopped)
    assert train_live.eta_seconds({**status, "deadline": now + 20.0}, rate, now=now) == pytest.approx(20.0)
    assert train_live.speed_of(status, rate, batch_size=16) == 160.0  # the trainer's measured images/s
    # just resumed: no step yet, so no rate (not the run's whole history over a few seconds)
    fresh = {**status, "step": 33, "segment_start": now - 1.0}
    assert train_live.steps_per_second(fresh, [], now, None) is None


def test_live_panel_after_a_resume_shows_the_true_step_speed_and_eta():
    run = fake_run("resumed", state="running", scores=(0.5,), epochs=3)
    now = time.time()
    run.write_status(
        pid=__import__("os").getpid(),
        step=43,
        total_steps=100,
        epoch=1,
        segment_start=now - 10.0,
        segment_step=33,
        img_per_s=160.0,
        deadline=None,
    )
    at = open_train("builtin:digits", run=run.id)
    assert not at.exception
    text = live_progress(at)[0]
    assert "43 of 100 steps in all" in text
    eta = text.split("ETA ")[1]
    seconds = (
        int(eta.split("m")[0]) * 60 + int(eta.split("m")[1].strip().rstrip("s")) if "m" in eta else int(eta.rstrip("s"))
    )
    assert 45 <= seconds <= 70, text  # 57 steps left at 1 step/s (the heartbeat is a moment old)
    speed = next(m for m in at.metric if m.label == "Images/s")
    assert speed.value == "160"


# --- the time estimate --------------------------------------------------------------------------------


def estimate_texts(at: AppTest, tries: int = 120) -> str:
    """The estimate's line once the probe (a background task) has finished."""
    for _ in range(tries):
        text = " ".join(m.value for m in at.markdown)
        if "Estimated time" in text:
            return text
        time.sleep(0.5)
        at.run()
    raise AssertionError("no time estimate shown")


def test_the_estimate_on_this_device_is_shown_before_start_and_warns_for_a_long_cpu_run():
    from engine.data import quick_stats
    from engine.train.timing import (
        Throughput,
        cached_throughput,
        duration,
        estimate_run,
        planned_shape,
        remember_throughput,
    )

    at = open_train("builtin:digits")
    number(at, "batch_size").set_value(48).run()
    number(at, "epochs").set_value(3).run()
    text = estimate_texts(at)  # the page probed the model in the background
    assert not at.exception

    def config() -> RunConfig:
        return RunConfig(**{n: form_value(at, n) for n in RunConfig().to_dict()}).validate()

    stats = quick_stats("builtin:digits")
    size, channels = planned_shape(config(), stats)
    tp = cached_throughput(config(), size, channels)  # the page's probe was cached: the same figures come back
    assert tp is not None and tp.source == "probe"
    est = estimate_run(config(), stats, tp)
    assert (
        f"about {duration(est.seconds_per_epoch)} per epoch" in text
        and f"{duration(est.total_seconds)} in total" in text
    )
    assert "this CPU" in text
    # the plan, not the wall clock: with known speeds, 3 epochs are short and 30 are long enough to warn
    known = Throughput(
        train_img_per_s=100.0, eval_img_per_s=1000.0, device=tp.device, probe_seconds=1.0, measured_at=time.time()
    )
    remember_throughput(config(), size, channels, False, known)
    at.run()
    text = estimate_texts(at)
    est = estimate_run(config(), stats, known)
    assert est.total_seconds < 60 and f"{duration(est.total_seconds)} in total" in text
    assert not any("would take about" in w.value for w in at.warning)
    number(at, "epochs").set_value(30).run()
    text = estimate_texts(at)
    long = estimate_run(config(), stats, known)
    assert long.total_seconds > 300 and f"{duration(long.total_seconds)} in total" in text
    assert any(f"would take about {duration(long.total_seconds)}" in w.value for w in at.warning)


def test_augmentation_preview_is_at_the_size_the_form_trains_at():
    """Issue 13 item 10: the caption kept the old size after the size changed."""
    at = open_train("builtin:digits")
    caption = next(c.value for c in at.caption if "working resolution" in c.value)
    assert "(8 px)" in caption  # digits are 8 x 8: the suggested size is theirs
    number(at, "image_size").set_value(20).run()
    assert not at.exception
    caption = next(c.value for c in at.caption if "working resolution" in c.value)
    assert "(20 px)" in caption
    assert len(at.image) == 4  # the preview itself is drawn at the new size
    number(at, "image_size").set_value(0).run()  # 0: the data's own size again
    assert "(8 px)" in next(c.value for c in at.caption if "working resolution" in c.value)


def test_runs_table_cells_are_readable_with_no_raw_none_and_whole_dates():
    """Issue 13 items 10 and 13: raw "None", truncated state and start columns in the runs table."""
    import re

    fake_run("done", scores=(0.5, 0.75))
    queued = jobs.prepare_run(RunConfig(dataset="builtin:digits", model="small_cnn", epochs=2, name="waiting"))
    crashed = fake_run("crashed", state="running", scores=(), epochs=4)
    atomic_write_json(crashed.path / "status.json", {**crashed.raw_status(), "pid": 2**22 + 1, "heartbeat": 0})
    at = open_train("builtin:digits")
    assert not at.exception
    df = runs_frame(at).set_index("Run")
    cells = [str(v) for v in df.drop(columns=["Id"]).to_numpy().ravel()]
    assert not [c for c in cells if c in ("None", "nan", "NaT", "") or "None" in c], cells
    assert df.loc["done", "Best"] == "75.00%" and df.loc["done", "Best epoch"] == "2"
    assert df.loc["waiting", "Best"] == "n/a" and df.loc["waiting", "Started"] == "n/a"
    assert df.loc["crashed", "State"] == "failed (crashed)"
    assert re.fullmatch(r"[A-Z][a-z]{2} \d{2} \d{2}:\d{2}", df.loc["done", "Started"])  # this year: 'Nov 30 20:47'
    assert df.loc["done", "Best (epoch)"] == "bal. acc. 75.00% (2)"
    from app.train.runs_table import SHOWN, WIDTHS

    assert set(WIDTHS) == set(SHOWN) and sum(WIDTHS.values()) <= 940  # every shown column fits the page's width
    assert queued.exists()


def test_live_charts_spread_the_epoch_under_way_and_scale_to_the_scores():
    """Issue 13 item 10: batch losses squeezed at the start of a 0..N epoch axis; scores flattened on 0..1."""
    from app.train import charts

    batches = [{"epoch": i / 10, "step": i, "split": "train", "loss": 2.3 - i * 0.05} for i in range(1, 10)]
    fig = charts.loss_curves(batches, epochs=15)
    lo, hi = fig.layout.xaxis.range
    assert lo == 0 and 0.9 <= hi <= 1.06  # the first epoch fills the width, not 1/15 of it
    ylo, yhi = fig.layout.yaxis.range
    assert 1.7 < ylo < 1.85 and 2.25 < yhi < 2.4  # the losses shown, padded
    vals = [
        {
            "epoch": e,
            "step": 10 * e,
            "split": "val",
            "loss": 1.0 / e,
            "train_loss": 1.1 / e,
            "accuracy": a,
            "balanced_accuracy": a - 0.01,
            "macro_f1": a - 0.02,
        }
        for e, a in ((1, 0.91), (2, 0.93), (3, 0.94))
    ]
    fig = charts.metric_curves(batches + vals, "val_balanced_accuracy", epochs=15)
    lo, hi = fig.layout.xaxis.range
    assert lo == 0 and 3 <= hi <= 3.2  # the epochs trained so far (and room for the last markers)
    ylo, yhi = fig.layout.yaxis.range
    assert 0.86 < ylo < 0.89 and 0.94 < yhi < 0.96  # differences between epochs fill the chart
    assert fig.layout.yaxis.tickformat.endswith("%")  # rates read as percentages, as everywhere in the app
    assert "%{y:.2%}" in fig.data[0].hovertemplate
    done = charts.loss_curves(batches + vals, epochs=3)
    assert 3 < done.layout.xaxis.range[1] <= 3.1


@pytest.mark.slow
@needs_fashion
def test_a_first_visit_decodes_no_dataset_for_the_preview(count_opens: list[str]):
    """Issue 13 follow-up: with no dataset chosen (the sidebar says so), the Train page decoded the default
    Fashion-MNIST for the augmentation preview. It waits for a choice; a choice in the form shows it."""
    at = open_train(dataset=None)
    assert not at.exception and not at.error
    assert "none chosen yet" in "\n".join(m.value for m in at.sidebar.markdown)
    assert count_opens == [] and not at.image
    assert any(c.value.startswith("No preview yet: the form starts from `builtin:fashion-mnist`") for c in at.caption)
    at.run()  # a rerun (any widget) still decodes nothing
    assert count_opens == []
    at.selectbox(key="train.f.dataset").set_value("builtin:digits").run()  # choosing a dataset previews it
    assert not at.exception
    assert count_opens == ["builtin:digits"] and len(at.image) == 4
    assert "`builtin:digits`" in "\n".join(m.value for m in at.sidebar.markdown)
