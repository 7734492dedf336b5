"""Two-level labels (issue 17, part 3): a CSV's coarse column or a hierarchy.json makes a two-level dataset;
training uses the fine labels, the run folder keeps the mapping, and evaluation, the CLI, the Evaluate page,
the Dataset page and Predict report the coarse level (P(coarse) = sum of its fine members' P, decided by
argmax). Real Fashion-MNIST pictures, built in tmp_path (tests/twolevel.py); one tiny run shared."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine import evaluate as ev
from engine.cli.main import main
from engine.data.dataset import open_dataset
from engine.data.sources.builtin import load_builtin
from engine.data.sources.detect import resolve_source
from engine.errors import DatasetError
from engine.metrics import display
from engine.metrics.hierarchy import coarse_decide, coarse_probs
from engine.runs.folder import Run
from tests.conftest import make_class_folders, needs_fashion
from tests.pagetools import APP, open_page, train_tiny
from tests.twolevel import FASHION_COARSE, fashion_csv, fashion_folders, folder_name

pytestmark = needs_fashion
COARSE = ["tops", "other", "footwear"]  # in the order of their first fine class (alphabetical fine names)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Run:
    """One real tiny run on a two-level CSV (12 pictures per class); its dataset is deleted afterwards, so
    everything that reads the coarse level must get it from the run folder."""
    data = tmp_path_factory.mktemp("twolevel-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOUPE_CACHE_DIR", str(session_cache))
        spec = str(fashion_csv(data, per_class=12))
    out = train_tiny(tmp_path_factory.mktemp("twolevel-runs"), spec, 16, session_cache)
    shutil.rmtree(data)
    return out


# --- entry formats ------------------------------------------------------------------------------------


def test_a_csv_coarse_column_makes_a_two_level_dataset(tmp_path: Path):
    source = resolve_source(str(fashion_csv(tmp_path, per_class=3)))
    h = source.hierarchy
    assert h is not None and not source.multilabel
    assert "Ankle boot" in source.classes  # a space is part of a fine name beside a coarse column
    assert h.mapping() == FASHION_COARSE
    assert list(h.coarse) == ["footwear", "other", "tops"]  # first fine class: 'Ankle boot', then 'Bag', 'Coat'
    assert h.members()["footwear"] == ["Ankle boot", "Sandal", "Sneaker"]
    assert any("Two-level labels from the column 'coarse' of 'labels.csv'" in n for n in source.notes)


def test_hierarchy_json_beside_class_folders_and_inside_a_zip(tmp_path: Path):
    root = fashion_folders(tmp_path / "folders", per_class=2)
    source = resolve_source(str(root))
    assert source.hierarchy is not None
    assert source.hierarchy.mapping() == {folder_name(f): c for f, c in FASHION_COARSE.items()}
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in root.rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(root).as_posix())
    zipped = resolve_source(str(archive))
    assert zipped.hierarchy is not None and zipped.hierarchy.mapping() == source.hierarchy.mapping()


def test_fashion_coarse_is_a_builtin_two_level_dataset():
    source = load_builtin("fashion-coarse")
    assert source.hierarchy is not None and source.hierarchy.mapping() == FASHION_COARSE
    assert list(source.hierarchy.coarse) == ["tops", "footwear", "other"]
    assert len(source) == 70_000


# --- validation where it enters -------------------------------------------------------------------------


def test_csv_rows_giving_one_fine_class_two_coarse_classes_are_refused_naming_the_rows(tmp_path: Path):
    path = fashion_csv(tmp_path, per_class=2)
    lines = path.read_text().splitlines()
    row = next(n for n, line in enumerate(lines) if ",Bag," in line)  # line n is the file's row n + 1
    second = next(n for n, line in enumerate(lines) if ",Bag," in line and n > row)
    lines[second] = lines[second].replace(",other", ",tops")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as err:
        resolve_source(str(path))
    msg = str(err.value)
    assert f"Rows {row + 1} and {second + 1} of 'labels.csv'" in msg
    assert "'Bag'" in msg and "'other'" in msg and "'tops'" in msg
    assert ". " not in msg and msg.endswith(".")  # one sentence


def test_a_fine_class_missing_from_hierarchy_json_is_refused(tmp_path: Path):
    mapping = {folder_name(f): c for f, c in FASHION_COARSE.items() if f != "Bag"}
    root = fashion_folders(tmp_path, per_class=1, hierarchy=mapping)
    with pytest.raises(DatasetError, match=r"The class 'Bag' is missing from 'hierarchy.json'"):
        resolve_source(str(root))


def test_a_coarse_level_on_multilabel_data_is_refused(tmp_path: Path):
    make_class_folders(tmp_path, {"a": 1, "b": 1, "c": 1})
    rows = ["filename,labels,coarse", "a/0.png,a;b,x", "b/0.png,b,x", "c/0.png,c,y"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"Row 2 of 'labels.csv' has several labels .*one fine label per image"):
        resolve_source(str(tmp_path / "labels.csv"))
    # a hierarchy.json beside a multi-label table
    (tmp_path / "labels.csv").write_text("filename,labels\na/0.png,a;b\nb/0.png,b\nc/0.png,c\n")
    (tmp_path / "hierarchy.json").write_text(json.dumps({"a": "x", "b": "x", "c": "y"}))
    with pytest.raises(DatasetError, match=r"'hierarchy.json' gives coarse labels, but the dataset is multi-label"):
        resolve_source(str(tmp_path / "labels.csv"))


def test_a_coarse_level_on_binary_data_is_refused(tmp_path: Path):
    make_class_folders(tmp_path, {"cat": 2, "dog": 2})
    (tmp_path / "hierarchy.json").write_text(json.dumps({"cat": "pet", "dog": "animal"}))
    with pytest.raises(DatasetError, match=r"'hierarchy.json' gives coarse labels, but the dataset is binary"):
        resolve_source(str(tmp_path))


def test_a_two_level_dataset_cannot_be_forced_to_another_task(tmp_path: Path):
    with pytest.raises(DatasetError, match="two-level labels .* so it is multiclass, not multilabel"):
        open_dataset(str(fashion_csv(tmp_path, per_class=1)), image_size=8, task="multilabel")


# --- the coarse rule and the report against a direct count ---------------------------------------------


def test_the_coarse_prediction_is_the_argmax_of_summed_probabilities_not_the_fine_argmax_parent():
    parent = np.array([0, 1, 1])  # fine 0 alone under coarse 0; fines 1 and 2 under coarse 1
    probs = np.array([[0.40, 0.35, 0.25], [0.6, 0.3, 0.1]])
    np.testing.assert_allclose(coarse_probs(probs, parent), [[0.40, 0.60], [0.6, 0.4]])
    assert coarse_decide(probs, parent).tolist() == [1, 0]  # the fine argmax (0) would say coarse 0 for row 1


def test_run_folder_keeps_the_mapping_and_the_coarse_report_matches_a_direct_count(run: Run):
    assert json.loads(run.hierarchy_file.read_text())["fine_to_coarse"] == FASHION_COARSE
    res = ev.evaluate_run(run, bootstrap=0)  # the dataset is gone: the run folder alone answers
    pred = ev.load_predictions(run, "test")
    classes = pred.classes
    coarse_names = res["coarse"]["classes"]
    # by hand, from the fine probabilities: sum each coarse class's members, take the largest sum
    truth, guess = [], []
    for y, p in zip(pred.labels, pred.probs):
        sums = {c: 0.0 for c in coarse_names}
        for j, fine in enumerate(classes):
            sums[FASHION_COARSE[fine]] += float(p[j])
        truth.append(coarse_names.index(FASHION_COARSE[classes[int(y)]]))
        guess.append(coarse_names.index(max(coarse_names, key=lambda c: sums[c])))
    cm = [[0] * len(coarse_names) for _ in coarse_names]
    for t, g in zip(truth, guess):
        cm[t][g] += 1
    assert res["coarse"]["confusion_matrix"] == cm
    assert res["coarse"]["accuracy"] == pytest.approx(sum(t == g for t, g in zip(truth, guess)) / len(truth))
    recalls = [cm[i][i] / sum(cm[i]) for i in range(len(cm)) if sum(cm[i])]
    assert res["coarse"]["balanced_accuracy"] == pytest.approx(sum(recalls) / len(recalls))
    f1 = []
    for i in range(len(cm)):
        tp, col, row = cm[i][i], sum(r[i] for r in cm), sum(cm[i])
        f1.append(2 * tp / (col + row) if col + row else 0.0)
    assert res["coarse"]["macro_f1"] == pytest.approx(sum(f1) / len(f1))
    assert res["coarse"]["members"]["footwear"] == ["Ankle boot", "Sandal", "Sneaker"]
    assert res["accuracy"] != res["coarse"]["accuracy"] or res["confusion_matrix"] != cm  # two levels, not one


# --- the command line -----------------------------------------------------------------------------------


def test_cli_evaluate_prints_both_levels_and_predict_the_coarse_class(run: Run, tmp_path: Path, capsys):
    assert main(["evaluate", str(run.path), "--bootstrap", "0", "--top", "0"]) == 0
    out = capsys.readouterr().out
    res = ev.evaluate_run(run, bootstrap=0)
    fine, coarse = out.split("coarse level")
    assert "fine level (10 classes" in fine
    assert f"accuracy             {display.percent(res['accuracy'])}" in fine
    assert "top-5 accuracy" in fine  # 10 fine classes: top-5 means something
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert f"{key:<20} {display.format_metric(key, res['coarse'][key])}" in coarse
    assert "footwear: Ankle boot, Sandal, Sneaker" in coarse
    assert "confusion (rows: true, columns: predicted)" in coarse
    picture = tmp_path / "x.png"
    Image.fromarray(np.asarray(load_builtin("fashion-mnist").arrays()[0])).save(picture)
    assert main(["predict", str(run.path), str(picture)]) == 0
    lines = capsys.readouterr().out.splitlines()
    coarse_line = next(line for line in lines if line.strip().startswith("coarse: "))
    assert coarse_line.split()[1] in COARSE


# --- the pages --------------------------------------------------------------------------------------------


def _heatmap_classes(at) -> list[list[str]]:
    out = []
    for el in at.get("plotly_chart"):
        fig = json.loads(el.proto.spec)
        out += [t["x"] for t in fig.get("data", []) if t.get("type") == "heatmap"]
    return out


def test_evaluate_page_toggles_between_fine_and_coarse(run: Run, monkeypatch):
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_page("pages/evaluation.py", "Evaluate", run)
    res = ev.evaluate_run(run)
    accuracy = next(m for m in at.metric if m.label == "Accuracy")
    assert accuracy.value == display.percent(res["accuracy"])
    assert len(_heatmap_classes(at)[0]) == 10
    at.segmented_control(key=f"eval.level.{run.id}").set_value("coarse").run()
    assert not at.exception and not at.error
    accuracy = next(m for m in at.metric if m.label == "Accuracy")
    assert accuracy.value == display.percent(res["coarse"]["accuracy"])
    assert sorted(_heatmap_classes(at)[0]) == sorted(COARSE)
    assert any("**footwear**: Ankle boot, Sandal, Sneaker" in c.value for c in at.caption)
    at.segmented_control(key=f"eval.level.{run.id}").set_value("fine").run()
    assert len(_heatmap_classes(at)[0]) == 10


def test_dataset_page_shows_the_hierarchy_with_counts(tmp_path: Path):
    spec = str(fashion_csv(tmp_path, per_class=2))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["dataset"] = spec
    at.run()
    assert not at.exception and not at.error
    assert any(s.value == "Coarse classes" for s in at.subheader)
    table = next(t.value for t in at.table if "coarse class" in t.value.columns)
    rows = {r["coarse class"]: r for r in table.to_dict("records")}
    assert rows["tops"]["images"] == "8" and rows["footwear"]["images"] == "6"
    assert "Sandal (2)" in rows["footwear"]["fine classes (images)"]
    treemaps = [
        t for el in at.get("plotly_chart") for t in json.loads(el.proto.spec)["data"] if t.get("type") == "treemap"
    ]
    assert len(treemaps) == 1 and sum(v for v, p in zip(treemaps[0]["values"], treemaps[0]["parents"]) if not p) == 20


def test_predict_page_and_csv_carry_the_coarse_class_decided_by_summed_probabilities(run: Run, tmp_path: Path):
    from app.predict import view
    from engine.predict.predictor import Predictor, write_csv
    from engine.predict.run_model import predict_tensor

    picture = tmp_path / "x.png"
    Image.fromarray(np.asarray(load_builtin("fashion-mnist").arrays()[1])).save(picture)
    predictor = Predictor.from_ref(str(run.path))
    (res,) = predictor.predict_paths([picture])
    # the model's own raw probabilities, summed by hand
    p = predict_tensor(predictor.rm, predictor.prepare(picture.read_bytes(), picture.name))[0]
    sums = {c: 0.0 for c in COARSE}
    for j, fine in enumerate(predictor.classes):
        sums[FASHION_COARSE[fine]] += float(p[j])
    assert res["coarse"] == max(sums, key=sums.get)
    assert f"coarse class **{res['coarse']}**" in view.decision_text(res, "multiclass")
    assert view.table([res])["coarse class"].tolist() == [res["coarse"]]
    header, row = write_csv(predictor, [res]).splitlines()
    assert header.split(",")[6:8] == ["coarse", "coarse_confidence"]
    assert res["coarse"] in row.split(",")


def test_data_stats_lists_each_coarse_class_with_its_fine_members_and_counts(tmp_path: Path, capsys):
    spec = str(fashion_csv(tmp_path, per_class=2))
    assert main(["data", "stats", spec, "--quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "coarse class footwear: 6 images (Ankle boot 2, Sandal 2, Sneaker 2)" in out
    assert main(["data", "stats", spec, "--quick", "--no-progress", "--json"]) == 0
    coarse = json.loads(capsys.readouterr().out)["hierarchy"]["coarse"]
    assert {c["name"]: c["images"] for c in coarse} == {"tops": 8, "footwear": 6, "other": 6}
