"""Attacks stay in the L-inf ball and in [0, 1], hurt accuracy, and the sweep's eps 0 is the evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.explain.attacks import epsilon_sweep, fgsm, minimal_epsilon, perturbation_image, pgd
from engine.predict.run_model import load_run_model, predict_tensor
from tests.test_explain import trained_digits_run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return trained_digits_run(tmp_path_factory)


def _batch(n: int = 16):
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(n) % 10


def test_fgsm_and_pgd_stay_in_the_ball_and_in_range(digits_run):
    rm = load_run_model(digits_run)
    x, y = _batch()
    for adv in (fgsm(rm, x, y, 0.03), pgd(rm, x, y, 0.03, steps=5)):
        assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
        assert (adv - x).abs().max() <= 0.03 + 1e-6
    img, scale = perturbation_image(x, fgsm(rm, x, y, 0.03))
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8 and scale > 0
    assert all(p.grad is None for p in rm.model.parameters())


def test_targeted_fgsm_raises_the_target_probability(digits_run):
    rm = load_run_model(digits_run)
    x, y = _batch()
    before = predict_tensor(rm, x)[:, 7]
    after = predict_tensor(rm, fgsm(rm, x, y, 0.05, targeted=True, target=7))[:, 7]
    assert after.mean() > before.mean()


def test_minimal_epsilon_is_zero_for_wrong_and_bounded_or_inf(digits_run):
    rm = load_run_model(digits_run)
    x, y = _batch(8)
    me = minimal_epsilon(rm, x, y, hi=0.2, iters=5)
    wrong = predict_tensor(rm, x).argmax(1) != y.numpy()
    assert me.shape == (8,) and (me[wrong] == 0).all()
    assert ((me[~wrong] > 0) & (me[~wrong] <= 0.2) | np.isinf(me[~wrong])).all()


def test_sweep_matches_the_evaluation_at_zero_and_degrades(digits_run):
    from engine.evaluate import load_predictions, metrics_at

    res = epsilon_sweep(digits_run, [0.1, 0.0, 0.03], split="val", limit=60, min_eps=True)
    pred = load_predictions(digits_run, "val")
    where = np.searchsorted(pred.indices, res["indices"])  # the sample the sweep attacked (stratified, recorded)
    clean = metrics_at(pred.labels[where], pred.probs[where], pred.task)["accuracy"]
    assert res["eps"] == [0.0, 0.03, 0.1] and res["n"] == 60
    assert res["accuracy"][0] == pytest.approx(clean) == pytest.approx(res["clean_accuracy"])
    assert res["accuracy"][0] >= res["accuracy"][1] >= res["accuracy"][2]
    assert res["accuracy"][2] < res["accuracy"][0]
    assert len(res["min_eps"]) == 60 and set(res["per_class"][0]) <= set(digits_run.classes())


def test_cli_attack_json(digits_run, capsys):
    from engine.cli.main import main

    assert (
        main(
            [
                "attack",
                str(digits_run.path),
                "--eps",
                "0,0.05",
                "--limit",
                "20",
                "--attack",
                "pgd",
                "--steps",
                "3",
                "--no-min-eps",
                "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["eps"] == [0.0, 0.05] and len(res["accuracy"]) == 2 and res["attack"] == "pgd"


def test_binary_sweep_reports_far_frr_hter_at_the_saved_threshold(tmp_path):
    from engine.config import RunConfig
    from engine.evaluate import load_predictions, metrics_at, save_thresholds
    from engine.train.fit import fit
    from engine.train.jobs import prepare_run
    from tests.conftest import needs_fashion

    if needs_fashion.args[0]:
        pytest.skip(needs_fashion.kwargs["reason"])
    cfg = RunConfig(
        dataset="builtin:fashion-binary",
        model="small_cnn",
        strategy="scratch",
        image_size=28,
        epochs=1,
        batch_size=32,
        train_limit=300,
        lr=1e-2,
        precision="fp32",
    ).validate()
    run = prepare_run(cfg, tmp_path / "runs")
    fit(cfg, run, log=lambda m: None)
    save_thresholds(run, {"binary": 0.3, "positive_class": 1, "rule": "manual", "tuned_on": "val"})
    sweep = epsilon_sweep(run, [0.0, 0.05], split="val", limit=80, min_eps=False)
    assert sweep["threshold"] == 0.3 and len(sweep["hter"]) == len(sweep["far"]) == len(sweep["frr"]) == 2
    for far, frr, hter in zip(sweep["far"], sweep["frr"], sweep["hter"]):
        assert hter == pytest.approx((far + frr) / 2)
    pred = load_predictions(run, "val")
    where = np.searchsorted(pred.indices, sweep["indices"])  # the sample the sweep attacked (stratified, recorded)
    clean = metrics_at(pred.labels[where], pred.probs[where], "binary", positive=1, threshold=0.3)
    assert sweep["far"][0] == pytest.approx(clean["far"], abs=1e-6) and sweep["frr"][0] == pytest.approx(
        clean["frr"], abs=1e-6
    )
    assert sweep["hter"][1] >= sweep["hter"][0]  # an attack does not make the decision better


# --- saved sweeps (engine.runs.sweeps) -------------------------------------------------------------


def test_sweep_is_saved_atomically_and_loaded_by_its_settings(digits_run):
    import shutil

    from engine.runs.sweeps import SWEEP_DIR, latest_sweep, load_record, load_sweep, save_sweep, sweep_key, sweep_params

    shutil.rmtree(digits_run.path / SWEEP_DIR, ignore_errors=True)
    assert latest_sweep(digits_run) is None
    params = sweep_params([0.03, 0.0], split="val", limit=20, attack="fgsm", steps=7)
    assert params == sweep_params([0.0, 0.03, 0.03], "val", 20, "fgsm", 1)  # FGSM ignores steps; eps sorted, deduped
    assert sweep_key(params) != sweep_key(sweep_params([0.0, 0.03], "val", 20, "pgd", 7))
    res = epsilon_sweep(digits_run, params["eps"], split="val", limit=20)
    path = save_sweep(digits_run, params, res)
    assert path == digits_run.path / SWEEP_DIR / f"{sweep_key(params)}.json"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    loaded = load_sweep(digits_run, params)
    assert loaded == json.loads(json.dumps(res))  # the whole result, JSON-equal
    assert load_sweep(digits_run, sweep_params([0.0, 0.03], "val", 40, "fgsm")) is None  # other settings: nothing
    assert load_sweep(digits_run, sweep_params([0.0, 0.03], "test", 20, "fgsm")) is None
    # a second sweep with other settings is the latest; the first stays loadable
    p2 = sweep_params([0.0, 0.05], "val", 20, "pgd", 2)
    save_sweep(digits_run, p2, epsilon_sweep(digits_run, [0.0, 0.05], limit=20, attack="pgd", steps=2, min_eps=False))
    latest = latest_sweep(digits_run)
    assert latest is not None and latest[0] == p2 and latest[1]["attack"] == "pgd" and latest[1]["steps"] == 2
    assert load_sweep(digits_run, params) == loaded
    assert (
        load_record(digits_run, params)["model_mtime"] == (digits_run.checkpoints / "best.safetensors").stat().st_mtime
    )


def test_saved_sweeps_survive_odd_values_and_ignore_broken_files(tmp_path):
    from engine.runs.folder import Run
    from engine.runs.sweeps import SWEEP_DIR, is_stale, latest_sweep, load_record, load_sweep, save_sweep, sweep_params

    run = Run(tmp_path / "r")
    (run.path / "checkpoints").mkdir(parents=True)
    params = sweep_params([0.0, 0.1], limit=5)
    result = {
        "eps": np.array([0.0, 0.1]),
        "accuracy": [np.float32(0.5), float("nan")],
        "n": np.int64(5),
        "min_eps": torch.tensor([0.01, float("inf")]),
    }
    save_sweep(run, params, result)
    assert load_sweep(run, params) == {
        "eps": [0.0, 0.1],
        "accuracy": [0.5, None],
        "n": 5,
        "min_eps": [pytest.approx(0.01), None],
    }
    assert not is_stale(run, load_record(run, params))  # no weights at either time: nothing to compare
    # a torn or foreign file is "no saved sweep", never an exception
    saved = next((run.path / SWEEP_DIR).glob("*.json"))
    saved.write_text('{"params": 1}')  # valid JSON, not a sweep record
    (run.path / SWEEP_DIR / "zzzz.json").write_text("{not json")  # torn
    assert load_sweep(run, params) is None and latest_sweep(run) is None


def test_saved_sweep_is_stale_after_the_weights_change(digits_run, tmp_path):
    import os
    import shutil

    from engine.runs.folder import Run
    from engine.runs.sweeps import is_stale, load_record, save_sweep, sweep_params

    run = Run(tmp_path / digits_run.id)
    shutil.copytree(digits_run.path, run.path)
    params = sweep_params([0.0], limit=10)
    save_sweep(run, params, {"eps": [0.0], "accuracy": [1.0]})
    rec = load_record(run, params)
    assert not is_stale(run, rec)
    best = run.checkpoints / "best.safetensors"
    os.utime(best, (best.stat().st_atime, best.stat().st_mtime + 5))  # as when training writes a better epoch
    assert is_stale(run, rec)


def test_cli_attack_save_writes_the_pages_file(digits_run, capsys):
    from engine.cli.main import main
    from engine.runs.sweeps import load_sweep, sweep_params

    assert (
        main(
            [
                "attack",
                str(digits_run.path),
                "--eps",
                "0,0.02",
                "--limit",
                "10",
                "--no-min-eps",
                "--save",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "saved -> " in capsys.readouterr().out
    saved = load_sweep(digits_run, sweep_params([0.0, 0.02], "val", 10, "fgsm", min_eps=False))
    assert saved is not None and saved["eps"] == [0.0, 0.02] and saved["n"] == 10 and "min_eps" not in saved


# --- the sweep's sample: stratified by class, seeded, recorded (issue 13, item 1) -------------------------


@pytest.fixture(scope="module")
def class_ordered_run(tmp_path_factory):
    """A binary run on class folders with a given val split of 60 negatives then 20 positives: the split is
    stored in dataset order, which is class order, as with the class folders a user uploads."""
    from engine.config import RunConfig
    from engine.train.fit import fit
    from engine.train.jobs import prepare_run
    from tests.conftest import make_class_folders

    root = tmp_path_factory.mktemp("ordered")
    data = root / "faces"
    make_class_folders(data, {"negatives": 90, "positives": 30}, split="train")
    make_class_folders(data, {"negatives": 60, "positives": 20}, split="val")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOUPE_CACHE_DIR", str(root / "cache"))
        cfg = RunConfig(
            dataset=str(data),
            model="small_cnn",
            strategy="scratch",
            image_size=16,
            epochs=1,
            batch_size=32,
            lr=1e-2,
            precision="fp32",
        ).validate()
        run = prepare_run(cfg, root / "runs")
        fit(cfg, run, log=lambda m: None)
    return run


def test_stratified_sample_keeps_each_class_share_and_every_class():
    from engine.explain.attacks import stratified_sample

    labels = np.array([0] * 600 + [1] * 300 + [2] * 100)  # class-ordered, like class folders
    pos = stratified_sample(labels, 100, seed=3)
    assert len(pos) == len(set(pos.tolist())) == 100 and (np.diff(pos) > 0).all()
    assert np.bincount(labels[pos]).tolist() == [60, 30, 10]
    assert np.array_equal(pos, stratified_sample(labels, 100, seed=3))  # seeded
    assert not np.array_equal(pos, stratified_sample(labels, 100, seed=4))
    rare = np.array([0] * 995 + [1] * 5)
    assert np.bincount(rare[stratified_sample(rare, 20)]).tolist() == [19, 1]  # a rare class is never dropped
    assert np.bincount(rare[stratified_sample(rare, 1)], minlength=2).tolist() == [1, 0]  # no room for both
    assert stratified_sample(labels, 0).tolist() == list(range(1000)) == stratified_sample(labels, 5000).tolist()


def test_sweep_on_a_class_ordered_split_holds_both_classes_and_frr_is_on_positives(class_ordered_run):
    from engine.evaluate import load_predictions, metrics_at

    run = class_ordered_run
    pred = load_predictions(run, "val")
    assert pred.labels.tolist() == [0] * 60 + [1] * 20, "the val split is stored in class order"
    res = epsilon_sweep(run, [0.0, 0.05], split="val", limit=40, min_eps=False)
    assert res["n"] == 40 and set(res["per_class"][0]) == {"negatives", "positives"}  # the first 40: negatives only
    assert res["class_counts"] == {"negatives": 30, "positives": 10}  # in proportion
    assert res["sample"] == "stratified" and res["seed"] == 0 and res["split_size"] == 80
    res = epsilon_sweep(run, [0.0, 0.05], split="val", limit=40, min_eps=False, seed=7)
    assert res["seed"] == 7 and res["class_counts"] == {"negatives": 30, "positives": 10}
    # the recorded indices are the sample, and FRR is the share of its positives rejected at the saved threshold
    where = np.searchsorted(pred.indices, res["indices"])
    assert np.array_equal(pred.indices[where], res["indices"])
    labels, probs = pred.labels[where], pred.probs[where]
    assert (labels == 1).sum() == 10
    scores = probs[:, 1]
    assert res["frr"][0] == pytest.approx(float((scores[labels == 1] < res["threshold"]).mean()))
    assert res["far"][0] == pytest.approx(float((scores[labels == 0] >= res["threshold"]).mean()))
    assert res["hter"][0] == pytest.approx((res["far"][0] + res["frr"][0]) / 2)
    clean = metrics_at(labels, probs, "binary", positive=1, threshold=res["threshold"])
    assert res["accuracy"][0] == pytest.approx(clean["accuracy"]) == pytest.approx(res["clean_accuracy"])
    assert res == epsilon_sweep(run, [0.0, 0.05], split="val", limit=40, min_eps=False, seed=7)  # reproducible


def test_a_rate_whose_class_is_absent_is_none_not_zero(class_ordered_run):
    res = epsilon_sweep(class_ordered_run, [0.0], split="val", limit=1, min_eps=False)
    assert res["frr"] == [None] and res["hter"] == [None] and res["far"][0] is not None  # not FRR 0%, HTER = FAR / 2
    assert res["class_counts"] == {"negatives": 1, "positives": 0}
    assert list(res["per_class"][0]) == ["negatives"]


def test_cli_attack_limit_is_stratified_and_prints_na(class_ordered_run, capsys):
    from engine.cli.main import main

    path = str(class_ordered_run.path)
    assert (
        main(
            [
                "attack",
                path,
                "--eps",
                "0,0.05",
                "--limit",
                "20",
                "--no-min-eps",
                "--json",
                "--no-progress",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["class_counts"] == {"negatives": 15, "positives": 5} and res["seed"] == 2 and len(res["indices"]) == 20
    assert main(["attack", path, "--eps", "0", "--limit", "1", "--no-min-eps", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 negatives, 0 positives" in out and "stratified by class, seed 0" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("0 "))
    assert row.split()[1].endswith("%") and row.split()[-2:] == ["n/a", "n/a"]  # FRR and HTER: no positives
    assert "None" not in out and "nan" not in out


def test_old_saved_sweeps_stay_readable_but_are_marked_outdated(class_ordered_run, tmp_path):
    import shutil

    from engine.runs import sweeps
    from engine.runs.folder import Run, atomic_write_json

    SWEEP_DIR, latest_record, load_record, outdated = (
        sweeps.SWEEP_DIR,
        sweeps.latest_record,
        sweeps.load_record,
        sweeps.outdated,
    )
    run = Run(tmp_path / class_ordered_run.id)
    shutil.copytree(class_ordered_run.path, run.path)
    shutil.rmtree(run.path / SWEEP_DIR, ignore_errors=True)
    old_params = {"eps": [0.0, 0.03], "split": "val", "limit": 40, "attack": "fgsm", "steps": 1, "min_eps": True}
    old = {
        "version": 1,
        "params": old_params,
        "saved_at": "2026-01-01T00:00:00",
        "model_mtime": None,
        "result": {"eps": [0.0, 0.03], "accuracy": [0.9, 0.5], "n": 40, "far": [0.1, 0.4], "frr": [0.0, 0.0]},
    }
    (run.path / SWEEP_DIR).mkdir(parents=True)
    atomic_write_json(run.path / SWEEP_DIR / "0123456789ab.json", old)
    rec = latest_record(run)
    assert rec is not None and rec["result"]["accuracy"] == [0.9, 0.5]  # readable
    assert outdated(rec) and "stratified" in outdated(rec)
    params = sweeps.sweep_params([0.0, 0.03], "val", 40, "fgsm")
    assert load_record(run, params) is None  # never the answer for today's settings
    assert sweeps.VERSION >= 2 and params["seed"] == 0
    assert sweeps.sweep_key(params) != sweeps.sweep_key({**params, "seed": 1})
    sweeps.save_sweep(run, params, epsilon_sweep(run, [0.0, 0.03], limit=40, min_eps=False))
    new = load_record(run, params)
    assert new is not None and new["version"] == sweeps.VERSION and outdated(new) is None
    assert new["result"]["seed"] == 0 and len(new["result"]["indices"]) == 40
