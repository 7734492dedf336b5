"""The Evaluate page, driven through AppTest on real tiny runs: numbers a user can trust and a page that holds
up at the app's default width (issue 13, items 4, 11 and 13).

- The metric cards above the tabs follow the threshold in force (the Threshold tab's slider), and say which
  threshold that is and where it came from; checked against a direct count from the predictions file.
- One format per metric (engine/metrics/display.py) on every card; no raw None/nan/Python repr anywhere.
- The Compare table fits its columns (HTER included) in the main column of a 1400 px window.
- Each gallery image has its own link to the Explain page, right under it, named by its file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block

from engine import evaluate as ev
from engine.metrics import display
from engine.runs.folder import Run
from tests.conftest import FASHION_DIR
from tests.pagetools import open_page, train_tiny

HAS_FASHION = (FASHION_DIR / "train-images-idx3-ubyte.gz").exists()
needs_fashion = pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST is not installed (dataset-fashion-mnist)")
MAIN_PX = 940  # the main column at a 1400 px window: 1400 - the sidebar (300) - the page's side padding (2 x 80)
WIDTHS = {"small": 75, "medium": 200, "large": 400}  # Streamlit's named column widths, in px
FORMATTED = re.compile(r"^(-?\d+\.\d{2}%|-?\d+\.\d{4}|n/a|[\d,]+)$")  # what display.format_metric writes
RAW = re.compile(r"\bNone\b|\bnan\b|\bNaN\b|\binf\b|object at 0x|^\{|^\[")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("trust-runs")
    out = {"digits": train_tiny(root, "builtin:digits", 8, session_cache)}
    if HAS_FASHION:
        out["binary"] = train_tiny(root, "builtin:fashion-binary", 28, session_cache)
        out["binary2"] = train_tiny(root, "builtin:fashion-binary", 28, session_cache)
    return out


def open_evaluate(monkeypatch: pytest.MonkeyPatch, run: Run) -> AppTest:
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_page("pages/evaluation.py", "Evaluate", run)
    assert not at.error, [e.value for e in at.error]
    return at


def card(at: AppTest, label: str, nth: int = 0) -> str:
    found = [m for m in at.metric if m.label == label]
    assert len(found) > nth, f"no card '{label}' in {[m.label for m in at.metric]}"
    return found[nth].value


def by_hand(run: Run, t: float) -> dict[str, float]:
    """FAR, FRR, HTER, accuracy, balanced accuracy and macro F1 at `t`, counted from predictions/test.npz."""
    with np.load(run.path / "predictions" / "test.npz") as z:
        labels, score = np.asarray(z["labels"]), np.asarray(z["probs"])[:, 1]  # positive class: index 1
    accept, pos, neg = score >= t, labels == 1, labels == 0
    fa, fr = int((accept & neg).sum()), int((~accept & pos).sum())
    ta, tr = int((accept & pos).sum()), int((~accept & neg).sum())
    far, frr = fa / int(neg.sum()), fr / int(pos.sum())
    f1 = lambda tp, fp, fn: 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0  # noqa: E731
    return {
        "far": far,
        "frr": frr,
        "hter": (far + frr) / 2,
        "accuracy": (ta + tr) / len(labels),
        "balanced_accuracy": (ta / int(pos.sum()) + tr / int(neg.sum())) / 2,
        "macro_f1": (f1(ta, fa, fr) + f1(tr, fr, fa)) / 2,
    }


def top_caption(at: AppTest) -> str:
    found = [c.value for c in at.caption if "reported on **" in c.value and "images)" in c.value]
    assert found, [c.value for c in at.caption]
    return found[0]


def assert_cards_at(at: AppTest, run: Run, t: float) -> None:
    want = by_hand(run, t)
    for label, key in (
        ("Accuracy", "accuracy"),
        ("Balanced accuracy", "balanced_accuracy"),
        ("Macro F1", "macro_f1"),
        ("HTER", "hter"),
    ):
        assert card(at, label) == f"{want[key] * 100:.2f}%", (label, t)
    # the Threshold tab's live cards say the same, in the same format
    assert card(at, "HTER", 1) == card(at, "HTER") and card(at, "Accuracy", 1) == card(at, "Accuracy")
    assert card(at, "FAR") == f"{want['far'] * 100:.2f}%" and card(at, "FRR") == f"{want['frr'] * 100:.2f}%"


# --- item 4: the cards follow the threshold in force ----------------------------------------------------


@needs_fashion
def test_cards_follow_the_slider_and_match_a_direct_count(runs, monkeypatch):
    run = runs["binary"]
    at = open_evaluate(monkeypatch, run)
    tuned = ev.tune_thresholds(run, rule="min_hter", split="val")["binary"]
    caption = top_caption(at)
    assert f"At threshold **{display.threshold(tuned)}**" in caption and "tuned on **val**" in caption
    assert_cards_at(at, run, tuned)
    for t in (0.3, 0.71):
        at.slider(key=f"eval.threshold.{run.id}").set_value(t).run()
        assert not at.exception
        caption = top_caption(at)
        assert f"At threshold **{display.threshold(t)}**: moved by hand" in caption, caption
        assert display.threshold(tuned) in caption  # where the tuned one was, for reference
        assert_cards_at(at, run, t)
    # a rule's button brings the cards back to the val-tuned threshold, and says so
    at.button(key="eval.use.eer").click().run()
    eer_t = ev.tune_thresholds(run, rule="eer", split="val")["binary"]
    assert "the EER rule, tuned on **val**" in top_caption(at)
    assert_cards_at(at, run, eer_t)
    # intervals belong to the decisions shown: the HTER card's interval holds its value
    hter = next(m for m in at.metric if m.label == "HTER")
    lo, hi = (float(v) for v in re.findall(r"(\d+\.\d+)", hter.proto.delta))
    assert lo <= float(hter.value.rstrip("%")) <= hi


@needs_fashion
def test_a_saved_threshold_is_named_as_saved(runs, monkeypatch, tmp_path):
    import shutil

    run = Run(shutil.copytree(runs["binary"].path, tmp_path / "runs" / runs["binary"].id))
    ev.save_thresholds(run, {"binary": 0.37, "positive_class": 1, "rule": "manual", "tuned_on": "manual"})
    at = open_evaluate(monkeypatch, run)
    assert "At threshold **0.3700**: saved with the run (chosen by hand)" in top_caption(at)
    assert_cards_at(at, run, 0.37)


# --- item 13: one format per metric, nothing raw -------------------------------------------------------


def page_texts(at: AppTest) -> list[str]:
    texts = [e.value for kind in ("markdown", "caption", "subheader", "title", "info", "warning") for e in at.get(kind)]
    for m in at.metric:
        texts += [m.label, m.value, m.proto.delta, m.proto.help]
    for df in [*at.dataframe, *at.table]:
        texts += [str(v) for v in df.value.astype(str).to_numpy().ravel()] + [str(c) for c in df.value.columns]
    for img in at.image:
        texts += [i.caption for i in img.proto.imgs]
    for link in at.main.get("page_link"):
        texts.append(link.proto.label)
    for chart in at.get("plotly_chart"):
        texts.append(json.loads(chart.proto.spec).get("layout", {}).get("title", {}).get("text", ""))
    return [t for t in texts if t]


@pytest.mark.parametrize("which", ["digits", pytest.param("binary", marks=needs_fashion)])
def test_every_card_in_the_one_format_and_no_raw_values_anywhere(runs, monkeypatch, which):
    run = runs[which]
    at = open_evaluate(monkeypatch, run)
    at.selectbox(key=f"eval.cell.{run.id}.test").set_value("1,1").run()  # a gallery on screen too
    assert not at.exception
    for m in at.metric:
        assert FORMATTED.match(m.value), f"card {m.label!r} shows {m.value!r}"
        if m.proto.delta.startswith("95% CI"):
            assert re.fullmatch(r"95% CI (\d+\.\d{2}–\d+\.\d{2}%|\d+\.\d{4}–\d+\.\d{4})", m.proto.delta), m.proto.delta
    raw = [t for t in page_texts(at) if RAW.search(t)]
    assert not raw, raw


# --- item 11: the compare table fits, each image has its own link ---------------------------------------


@needs_fashion
def test_compare_table_shows_every_column_hter_included_in_the_main_column(runs, monkeypatch):
    run = runs["binary"]
    at = open_evaluate(monkeypatch, run)
    table = next(df for df in at.dataframe if "Run" in df.value.columns)
    columns = list(table.value.columns)
    assert "HTER" in columns and len(table.value) == 2  # both runs on this dataset
    config = json.loads(table.proto.columns)
    widths = [config.get(c, {}).get("width") for c in columns]
    assert all(widths), f"columns without a set width (they size to their content): {dict(zip(columns, widths))}"
    total = sum(WIDTHS.get(w, w) for w in widths)
    assert total <= MAIN_PX, f"{total} px of columns in a {MAIN_PX} px column: the right-hand ones scroll out of sight"
    assert config["HTER"]["type_config"]["format"] == "%.2f%%"  # a rate, in percent with two decimals
    mine = next(r for _, r in table.value.iterrows() if str(r["Run"]).startswith("● "))
    res = ev.evaluate_run(run, bootstrap=0)
    assert mine["HTER"] == pytest.approx(res["hter"] * 100)


def gallery_items(block) -> list[tuple]:
    """(image, link) of every gallery item: a block of its own holding one image and, after it (its caption
    between them), one link."""
    out = []
    children = list(block.children.values()) if isinstance(block.children, dict) else list(block.children)
    kinds = [getattr(c, "type", None) for c in children]
    if kinds.count("image") == 1 and kinds.count("page_link") == 1 and kinds.index("image") < kinds.index("page_link"):
        out.append((children[kinds.index("image")], children[kinds.index("page_link")]))
    for c in children:
        if isinstance(c, Block):
            out += gallery_items(c)
    return out


def test_each_gallery_image_has_its_own_link_under_it_named_by_its_file(runs, monkeypatch):
    run = runs["digits"]
    at = open_evaluate(monkeypatch, run)
    pred = ev.load_predictions(run, "test")
    cell = int(np.bincount(pred.labels[pred.probs.argmax(1) == pred.labels]).argmax())
    at.selectbox(key=f"eval.cell.{run.id}.test").set_value(f"{cell},{cell}").run()
    images = list(at.image)
    items = gallery_items(at.main)
    n_images = sum(len(img.proto.imgs) for img in images)
    assert items and len(items) == n_images, f"{len(items)} image+link items for {n_images} gallery images"
    id_of = {int(i): str(s) for i, s in zip(pred.indices, pred.ids)}
    for image, link in items:
        assert len(image.proto.imgs) == 1
        index = int(re.search(r"image=(\d+)", link.proto.query_string).group(1))
        assert f"run={run.id}" in link.proto.query_string
        # a built-in dataset's ids are "digits#<n>": the link names the image "#<n>" (the dataset is the same for all)
        assert link.proto.label == "#" + id_of[index].rsplit("#", 1)[1], (link.proto.label, id_of[index])


def test_file_names_for_links_are_short_and_keep_both_ends():
    from app.evaluate.gallery import file_name

    assert file_name("positives/IMG_0042.jpg") == "IMG_0042.jpg"
    assert file_name("fashion-binary#7177") == "#7177"
    long = file_name("negatives/a_very_long_photo_name_from_a_phone_20240101.jpg")
    assert len(long) <= 19 and long.startswith("a_ver") and long.endswith("20240101.jpg") and "…" in long
