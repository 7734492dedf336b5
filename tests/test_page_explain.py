"""The Explain page through AppTest on a tiny real run (digits, small CNN, 8 px, 1 epoch, trained here in
seconds): attribution maps for a dataset image picked with ?image=, an uploaded image, the adversarial
panel (three images, flip flag checked against the model itself), the robustness sweep and no runs; and what
issue 13 found: the crash after moving to an image predicted otherwise, the browse expander folding up, numbers
for people ("n/a", "×50"), the minimal-epsilon title, and sweeps on a class-ordered binary split."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.runs.folder import Run
from tests.pagetools import open_page, train_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Run:
    return train_tiny(tmp_path_factory.mktemp("explain-runs"), "builtin:digits", 8, session_cache)


def open_explain(run: Run | None = None, **params: str) -> AppTest:
    return open_page("pages/explanations.py", "Explain", run, **params)


def figures(at) -> dict[str, dict]:
    out = {}
    for el in at.get("plotly_chart"):
        fig = json.loads(el.proto.spec)
        out[fig.get("layout", {}).get("title", {}).get("text", "")] = fig
    return out


def n_images(block) -> int:
    """Images drawn in a block (one st.image call may hold several)."""
    return sum(len(el.value) for el in block.image)


def captions_of(block) -> list[str]:
    return [c for el in block.image for c in el.captions]


def test_no_runs_points_to_train():
    at = open_explain()
    assert not at.error
    assert any("No trained run" in i.value and "Train" in i.value for i in at.info)


def test_dataset_image_from_query_param_shows_maps(run, monkeypatch):
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_explain(run, image="7")
    assert not at.error
    assert at.number_input(key="expl.index").value == 7
    assert at.query_params["image"] == "7"
    assert at.multiselect(key="expl.methods").value == ["saliency", "gradcam"]
    attributions = at.tabs[0]
    caps = captions_of(attributions)
    for method in ("saliency", "gradcam"):
        assert f"{method} · heatmap" in caps and f"{method} · overlay" in caps
    assert "original" in caps
    assert sum("Deletion AUC" in c.value for c in attributions.caption) == 2
    assert sum("infidelity" in c.value and "max-sensitivity" in c.value for c in attributions.caption) == 2
    assert any(t.startswith("Deletion curves") for t in figures(at))
    assert any(t.startswith("Top ") for t in figures(at))
    # another index typed in moves the URL along
    at.number_input(key="expl.index").set_value(11).run()
    assert not at.exception and at.query_params["image"] == "11"


def _png(seed: int = 0, size: int = 20) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_uploaded_image_is_explained(run, monkeypatch):
    from app.explain import load
    from engine.predict.run_model import load_run_model, prepare_image

    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    data = _png()
    rm = load_run_model(run)
    picked = load.from_upload(data, "upload.png", rm)
    pixels, x = prepare_image(data, "upload.png", rm)
    assert picked.pixels.shape == (8, 8, 1) and picked.label is None
    assert np.array_equal(picked.pixels, pixels) and picked.x.shape == x.shape
    at = open_explain(run)
    at.radio(key="expl.source").set_value("upload").run()
    assert not at.exception and "image" not in at.query_params
    at.file_uploader(key="expl.uploader").set_value(("upload.png", data, "image/png")).run()
    assert not at.exception and not at.error
    assert "upload.png" in captions_of(at)
    assert n_images(at.tabs[0]) >= 5  # the original and each method's heatmap + overlay
    # a file that is not an image: a clear error, no exception
    at.file_uploader(key="expl.uploader").set_value(("notes.png", b"not an image", "image/png")).run()
    assert not at.exception and any("notes.png" in e.value for e in at.error)


def test_adversarial_panel_three_images_and_flip_flag(run, monkeypatch):
    import torch

    from app.explain import load
    from engine.data import open_dataset
    from engine.explain.attacks import fgsm
    from engine.predict.run_model import load_run_model, predict_tensor

    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    rm = load_run_model(run)
    ds = open_dataset("builtin:digits", image_size=8)
    idx = int(ds.splits["test"][0])
    at = open_explain(run, image=str(idx))
    for eps in (0.0, 0.1):
        at.slider(key="adv.eps").set_value(eps).run()
        assert not at.exception
        panel = at.tabs[1]
        caps = captions_of(panel)
        assert len(caps) == 3 and caps[0].startswith("original: ") and caps[1].startswith("perturbation")
        assert caps[2].startswith("adversarial: ")
        picked = load.from_dataset(ds, idx, rm)
        y = torch.tensor([int(ds.labels[idx])])
        x_adv = fgsm(rm, picked.x, y, eps)
        clean, adv = predict_tensor(rm, picked.x)[0].argmax(), predict_tensor(rm, x_adv)[0].argmax()
        flipped = clean != adv
        assert any("Prediction flipped" in e.value for e in panel.error) == flipped
        assert any("Prediction held" in s.value for s in panel.success) == (not flipped)
        assert caps[2].startswith(f"adversarial: {rm.classes[adv]} ")
        if eps == 0.0:
            assert not flipped
    # the attribution of the adversarial image next to the clean one
    at.toggle(key="adv.explain").set_value(True).run()
    assert not at.exception
    caps = captions_of(at.tabs[1])
    assert any(c.startswith("clean · saliency") for c in caps) and any(
        c.startswith("adversarial · saliency") for c in caps
    )


def test_robustness_sweep_draws_its_charts(run, monkeypatch):
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_explain(run)
    at.text_input(key="rob.eps").set_value("0.02, 0.1")
    at.number_input(key="rob.limit").set_value(20)
    at.button(key="rob.go").click().run()
    assert not at.exception and not at.error
    figs = figures(at)
    acc = next(f for t, f in figs.items() if t.startswith("Accuracy vs epsilon"))
    assert acc["data"][0]["x"] == [0.0, 0.02, 0.1]
    assert acc["data"][0]["y"][0] >= acc["data"][0]["y"][-1]  # attacks do not help
    assert any(t.startswith("Robust accuracy per class") for t in figs)
    assert any(t.startswith("Minimal epsilon") for t in figs)


def test_robustness_sweep_comes_back_in_a_fresh_session(run, monkeypatch):
    """A reload is a new session: the sweep saved in the run folder is drawn again without a click, with the
    settings it was run with; other settings show the latest saved sweep with a caption saying so."""
    import shutil

    from engine.runs.sweeps import SWEEP_DIR, load_sweep, sweep_params

    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    shutil.rmtree(run.path / SWEEP_DIR, ignore_errors=True)
    fresh = open_explain(run)
    assert not any(t.startswith("Accuracy vs epsilon") for t in figures(fresh)), "no sweep saved yet: no chart"
    first = open_explain(run)
    first.text_input(key="rob.eps").set_value("0.03, 0.08")
    first.number_input(key="rob.limit").set_value(20)
    first.button(key="rob.go").click().run()
    assert not first.exception and not first.error
    before = next(f for t, f in figures(first).items() if t.startswith("Accuracy vs epsilon"))
    saved = load_sweep(run, sweep_params([0.0, 0.03, 0.08], "val", 20, "fgsm"))
    assert saved is not None and saved["accuracy"] == before["data"][0]["y"]

    again = open_explain(run)  # the reload: nothing clicked
    assert not again.exception and not again.error
    assert again.text_input(key="rob.eps").value == "0, 0.03, 0.08" and again.number_input(key="rob.limit").value == 20
    after = next(f for t, f in figures(again).items() if t.startswith("Accuracy vs epsilon"))
    assert after["data"] == before["data"]
    assert any(t.startswith("Minimal epsilon") for t in figures(again))
    assert not any("settings above differ" in c.value for c in again.caption)
    # other settings, not run: the saved sweep stays, labelled with its own settings
    again.number_input(key="rob.limit").set_value(30).run()
    assert not again.exception
    assert any(t.startswith("Accuracy vs epsilon") for t in figures(again))
    note = next(c.value for c in again.caption if "settings above differ" in c.value)
    assert "ε = 0, 0.03, 0.08" in note and "20 val images" in note


# --- issue 13: state that belongs to one image, sweeps with both classes, numbers for people ------------------

NONE_OR_NAN = re.compile(r"\b(None|nan|NaN|inf)\b")


def _target(at: AppTest):
    """The attributions' "Explain the class" selector (its key carries the image, so find it by label)."""
    return next(sb for sb in at.selectbox if sb.label == "Explain the class")


def _browser_sends(element, label: str) -> None:
    """Make `element` send `label` on the next run, as the browser does: it keeps the label it shows for a widget
    id (here, the one it had before the image changed) and sends it back with the next interaction."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    state = WidgetState(id=element.id, string_value=label)
    element.__class__ = type("BrowserSelectbox", (type(element),), {"_widget_state": property(lambda self: state)})


def _two_images_predicted_differently(run: Run) -> tuple[int, int, int, int]:
    """(image a, its predicted class, image b, its predicted class) among the test images."""
    from engine.data import open_dataset
    from engine.data.pixels import to_tensor
    from engine.predict.run_model import load_run_model, predict_tensor

    rm = load_run_model(run)
    ds = open_dataset("builtin:digits", image_size=8)
    test = np.asarray(ds.splits["test"])
    pred = predict_tensor(rm, to_tensor(ds.images[test])).argmax(1)
    j = int(np.flatnonzero(pred != pred[0])[0])
    return int(test[0]), int(pred[0]), int(test[j]), int(pred[j])


def test_moving_to_an_image_predicted_otherwise_then_touching_a_widget_does_not_crash(run, monkeypatch):
    """Issue 13, item 6: image A (predicted a) -> image B (predicted b) -> touch any widget crashed the page with
    `'<=' not supported between 'int' and 'str'`: the browser sent back the class selector's old label
    ("a (predicted)"), which is no option of B's selector."""
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    a, pa, b, pb = _two_images_predicted_differently(run)
    at = open_explain(run, image=str(a))
    before = _target(at)
    assert before.value == pa
    shown = before.options[before.index]
    assert shown.endswith("(predicted)")
    at.number_input(key="expl.index").set_value(b).run()
    assert not at.exception
    after = _target(at)
    assert after.value == pb and after.options[after.index].endswith("(predicted)"), "the class follows the new image"
    if after.id == before.id:  # the same widget as for image A: the browser still holds A's label for it
        _browser_sends(after, shown)
    at.slider(key="expl.alpha").set_value(0.3).run()
    assert not at.exception, at.exception
    assert len(at.tabs) == 3 and _target(at).value == pb
    # and back again, then the adversarial panel's target towards another class
    at.number_input(key="expl.index").set_value(a).run()
    at.toggle(key="adv.targeted").set_value(True).run()
    assert not at.exception and _target(at).value == pa
    towards = next(sb for sb in at.selectbox if sb.label == "Towards")
    assert pa not in towards.options and towards.value != pa
    at.number_input(key="expl.index").set_value(b).run()
    at.slider(key="adv.eps").set_value(0.02).run()
    assert not at.exception, at.exception
    towards = next(sb for sb in at.selectbox if sb.label == "Towards")
    assert towards.value != pb and isinstance(towards.value, int)


def test_browse_by_class_stays_open_when_a_class_is_chosen(run, monkeypatch):
    """Issue 13, item 12: the expander folded up when a class was chosen in it."""
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_explain(run)
    browse = next(e for e in at.expander if e.label == "Browse by class")
    assert browse.proto.expanded, "a first visit without ?image= opens it"
    at.selectbox(key="expl.browse_class").set_value(3).run()
    assert not at.exception
    browse = next(e for e in at.expander if e.label == "Browse by class")
    assert browse.proto.expanded, "choosing a class keeps it open"
    assert any("images; the first" in c.value for c in browse.caption)
    linked = open_explain(run, image="5")  # a link that chose the image: closed, and it stays as the user leaves it
    assert not next(e for e in linked.expander if e.label == "Browse by class").proto.expanded


def test_numbers_on_the_attributions_and_adversarial_tabs_are_for_people(run, monkeypatch):
    """Issue 13, items 12 and 13: "n/a" (with a tooltip) where max-sensitivity is not computed, no raw None;
    the amplification rounded ("×50", never "×49.9999")."""
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_explain(run, image="7")
    at.multiselect(key="expl.methods").set_value(["saliency", "integrated_gradients"]).run()
    assert not at.exception and not at.error
    table = at.tabs[0].dataframe[0].value
    row = dict(zip(table["method"], table["max-sensitivity"]))
    assert row["integrated_gradients"] == "n/a" and re.fullmatch(r"\d+\.\d{4}", row["saliency"]), row
    assert all(re.fullmatch(r"\d+\.\d{4}", v) for v in table["deletion AUC (lower is better)"])
    for c in at.tabs[0].caption:
        assert not NONE_OR_NAN.search(c.value), c.value
    at.slider(key="adv.eps").set_value(0.01).run()
    pert = next(c for c in captions_of(at.tabs[1]) if c.startswith("perturbation"))
    m = re.search(r"amplified ×([\d.]+);", pert)
    assert m and re.fullmatch(r"\d+|\d\.\d", m.group(1)), pert
    for el in (*at.markdown, *at.caption, *at.metric):
        assert not NONE_OR_NAN.search(str(el.value)), el.value
    # the predicted class is a heading that wraps (st.metric cut long class names off with an ellipsis)
    assert not at.metric and any(md.value.startswith("### ") for md in at.markdown)


def test_minimal_epsilon_title_fits_its_half_width_chart(run, monkeypatch):
    """Issue 13, item 12: the title (at 15 px, in half the page) was cut off; the counts go to a caption."""
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_explain(run)
    at.text_input(key="rob.eps").set_value("0.02, 0.1")
    at.number_input(key="rob.limit").set_value(20)
    at.button(key="rob.go").click().run()
    assert not at.exception and not at.error
    title = next(t for t in figures(at) if t.startswith("Minimal epsilon"))
    assert len(title) <= 32, title  # about 430 px of title at 15 px in half of a 1400 px page
    assert any(re.search(r"\d+ images? flipped", c.value) for c in at.caption)


# a binary run whose val split is stored in class order (60 negatives, then 20 positives), as class folders give


@pytest.fixture(scope="module")
def ordered_binary_run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Run:
    from engine.config import RunConfig
    from engine.train.fit import fit
    from engine.train.jobs import prepare_run
    from tests.conftest import make_class_folders
    from tests.pagetools import TINY

    root = tmp_path_factory.mktemp("ordered-binary")
    data = root / "faces"
    make_class_folders(data, {"negatives": 90, "positives": 30}, split="train")
    make_class_folders(data, {"negatives": 60, "positives": 20}, split="val")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOUPE_CACHE_DIR", str(session_cache))
        cfg = RunConfig(dataset=str(data), image_size=16, **TINY).validate()
        run = prepare_run(cfg, root / "runs")
        fit(cfg, run, log=lambda m: None)
    return run


def test_binary_sweep_on_a_class_ordered_split_shows_both_classes(ordered_binary_run, monkeypatch):
    """Issue 13, item 1 on the page: 20 of 80 class-ordered val images are 15 negatives and 5 positives (the first
    20 were negatives only); FAR, FRR and HTER in the table as percentages; the heatmap has both rows."""
    import shutil

    from engine.runs.sweeps import SWEEP_DIR

    run = ordered_binary_run
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    shutil.rmtree(run.path / SWEEP_DIR, ignore_errors=True)
    at = open_explain(run)
    at.text_input(key="rob.eps").set_value("0.05")
    at.number_input(key="rob.limit").set_value(20)
    at.button(key="rob.go").click().run()
    assert not at.exception and not at.error
    heat = next(f for t, f in figures(at).items() if t.startswith("Robust accuracy per class"))
    assert sorted(heat["data"][0]["y"]) == ["negatives", "positives"]
    table = at.tabs[2].dataframe[0].value
    assert list(table.columns[-3:]) == ["FAR", "FRR", "HTER"] and len(table) == 2
    assert all(re.fullmatch(r"\d+\.\d{2}%", v) for c in ("accuracy", "FAR", "FRR", "HTER") for v in table[c])
    assert any("15 negatives, 5 positives" in c.value and "stratified by class" in c.value for c in at.caption)


def test_saved_sweeps_without_positives_or_from_an_older_loupe_say_so(ordered_binary_run, monkeypatch):
    """A rate whose class is not in the sample is "n/a" (not 0%); a sweep saved by an older Loupe (the first N
    images) is shown with a warning to run it again."""
    import shutil

    from engine.cli.main import main
    from engine.runs.folder import atomic_write_json
    from engine.runs.sweeps import SWEEP_DIR

    run = ordered_binary_run
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    shutil.rmtree(run.path / SWEEP_DIR, ignore_errors=True)
    assert main(["attack", str(run.path), "--eps", "0,0.05", "--limit", "1", "--save", "--no-progress"]) == 0
    at = open_explain(run)
    assert not at.exception
    table = at.tabs[2].dataframe[0].value
    assert list(table["FRR"]) == ["n/a", "n/a"] and list(table["HTER"]) == ["n/a", "n/a"]
    assert all(v.endswith("%") for v in table["FAR"])
    acc = next(f for t, f in figures(at).items() if t.startswith("Accuracy and HTER"))
    assert any(tr["name"].startswith("FRR n/a") for tr in acc["data"])
    assert not any(NONE_OR_NAN.search(str(v)) for c in table.columns for v in table[c])

    shutil.rmtree(run.path / SWEEP_DIR)
    old = {
        "version": 1,
        "params": {"eps": [0.0, 0.05], "split": "val", "limit": 20, "attack": "fgsm", "steps": 1, "min_eps": False},
        "saved_at": "2026-01-01T00:00:00",
        "model_mtime": None,
        "result": {
            "run": run.id,
            "split": "val",
            "n": 20,
            "attack": "fgsm",
            "task": "binary",
            "eps": [0.0, 0.05],
            "accuracy": [0.9, 0.6],
            "far": [0.1, 0.4],
            "frr": [0.0, 0.0],
            "hter": [0.05, 0.2],
            "per_class": [{"negatives": 0.9}, {"negatives": 0.6}],
            "threshold": 0.5,
        },
    }
    (run.path / SWEEP_DIR).mkdir()
    atomic_write_json(run.path / SWEEP_DIR / "0123456789ab.json", old)
    again = open_explain(run)
    assert not again.exception
    assert any("older Loupe" in w.value and "stratified" in w.value for w in again.warning)
    assert any("the first ones of the split" in c.value for c in again.caption)


def test_long_class_names_wrap_on_chart_axes():
    from app.explain.charts import top_k_bars, wrap

    long = "Egyptian cat, a domestic breed with a spotted coat and long legs"
    assert wrap("cat") == "cat"
    lines = wrap(long).split("<br>")
    assert 1 < len(lines) <= 3 and all(len(line) <= 22 for line in lines) and lines[-1].endswith("…")
    fig = top_k_bars(np.array([0.7, 0.3]), [long, "dog"], 2).to_plotly_json()
    assert "<br>" in fig["data"][0]["y"][-1] and fig["data"][0]["customdata"][-1] == long  # the hover has it whole
    assert fig["layout"]["xaxis"]["tickvals"][-1] == 1.0


def test_a_binary_image_is_decided_at_the_runs_saved_threshold(ordered_binary_run, monkeypatch):
    """The page's "Predicted" is the run's decision (as on Evaluate and Predict), not the argmax: with a saved
    threshold below an image's score, that image is positive even when its score is under 50%."""
    from engine.evaluate import load_predictions, save_thresholds

    run = ordered_binary_run
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    pred = load_predictions(run, "val")
    j = int(np.argmin(np.abs(pred.probs[:, 1] - 0.4)))  # the image whose score is nearest 40%
    score = float(pred.probs[j, 1])
    assert score < 0.5
    try:
        save_thresholds(run, {"binary": score - 0.01, "positive_class": 1, "rule": "manual", "tuned_on": "val"})
        at = open_explain(run, image=str(int(pred.indices[j])))
        assert not at.exception
        assert any(md.value == "### positives" for md in at.markdown), [md.value for md in at.markdown]
        assert any("saved threshold" in c.value and f"≥ {score - 0.01:.4f}" in c.value for c in at.caption)
        assert _target(at).value == 1 and _target(at).options[1] == "positives (predicted)"
    finally:
        (run.path / "thresholds.json").unlink(missing_ok=True)


def test_the_decided_class_per_task():
    from app.explain.load import decided

    assert decided(np.array([0.6, 0.4]), "binary", (0.3, 1)) == 1  # at the saved threshold, not the argmax
    assert decided(np.array([0.6, 0.4]), "binary", (0.5, 1)) == 0
    assert decided(np.array([0.3, 0.7]), "binary", (0.5, 0)) == 1  # positive class 0: P(0) = 0.3 < 0.5
    assert decided(np.array([0.2, 0.5, 0.3]), "multiclass", (None, 0)) == 1
    assert decided(np.array([0.9, 0.95, 0.1]), "multilabel", (None, 0)) == 1  # the top label


def test_the_minimal_epsilon_histogram_counts_images_in_whole_numbers():
    """Issue 13 item 13 (numbers for people): with a handful of flipped images the y axis showed 0.5 and 1.5."""
    from app.explain.charts import min_eps_histogram

    few = min_eps_histogram([0.02, 0.05, 0.052, None, 0.0], 0.1).layout.yaxis
    assert few.dtick == 1 and few.tickformat == ",d"
    many = min_eps_histogram([0.001 * i for i in range(1, 60)], 0.1).layout.yaxis
    assert many.dtick is None and many.tickformat == ",d"  # plotly spaces the ticks; each is a whole number
