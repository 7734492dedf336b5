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
    clean = metrics_at(pred.labels[:60], pred.probs[:60], pred.task)["accuracy"]
    assert res["eps"] == [0.0, 0.03, 0.1] and res["n"] == 60
    assert res["accuracy"][0] == pytest.approx(clean) == pytest.approx(res["clean_accuracy"])
    assert res["accuracy"][0] >= res["accuracy"][1] >= res["accuracy"][2]
    assert res["accuracy"][2] < res["accuracy"][0]
    assert len(res["min_eps"]) == 60 and set(res["per_class"][0]) <= set(digits_run.classes())


def test_cli_attack_json(digits_run, capsys):
    from engine.cli.main import main

    assert main(["attack", str(digits_run.path), "--eps", "0,0.05", "--limit", "20", "--attack", "pgd",
                 "--steps", "3", "--no-min-eps", "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["eps"] == [0.0, 0.05] and len(res["accuracy"]) == 2 and res["attack"] == "pgd"


def test_binary_sweep_reports_far_frr_hter_at_the_saved_threshold(tmp_path):
    from engine.config import RunConfig
    from engine.evaluate import load_predictions, metrics_at, save_thresholds
    from engine.train.jobs import prepare_run
    from engine.train.fit import fit
    from tests.conftest import needs_fashion

    if needs_fashion.args[0]:
        pytest.skip(needs_fashion.kwargs["reason"])
    cfg = RunConfig(dataset="builtin:fashion-binary", model="small_cnn", strategy="scratch", image_size=28,
                    epochs=1, batch_size=32, train_limit=300, lr=1e-2, precision="fp32").validate()
    run = prepare_run(cfg, tmp_path / "runs")
    fit(cfg, run, log=lambda m: None)
    save_thresholds(run, {"binary": 0.3, "positive_class": 1, "rule": "manual", "tuned_on": "val"})
    sweep = epsilon_sweep(run, [0.0, 0.05], split="val", limit=80, min_eps=False)
    assert sweep["threshold"] == 0.3 and len(sweep["hter"]) == len(sweep["far"]) == len(sweep["frr"]) == 2
    for far, frr, hter in zip(sweep["far"], sweep["frr"], sweep["hter"]):
        assert hter == pytest.approx((far + frr) / 2)
    pred = load_predictions(run, "val")
    clean = metrics_at(pred.labels[:80], pred.probs[:80], "binary", positive=1, threshold=0.3)
    assert sweep["far"][0] == pytest.approx(clean["far"], abs=1e-6) and sweep["frr"][0] == pytest.approx(clean["frr"], abs=1e-6)
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
    assert load_record(digits_run, params)["model_mtime"] == (digits_run.checkpoints / "best.safetensors").stat().st_mtime


def test_saved_sweeps_survive_odd_values_and_ignore_broken_files(tmp_path):
    from engine.runs.sweeps import SWEEP_DIR, is_stale, latest_sweep, load_record, load_sweep, save_sweep, sweep_params
    from engine.runs.folder import Run

    run = Run(tmp_path / "r")
    (run.path / "checkpoints").mkdir(parents=True)
    params = sweep_params([0.0, 0.1], limit=5)
    result = {"eps": np.array([0.0, 0.1]), "accuracy": [np.float32(0.5), float("nan")], "n": np.int64(5),
              "min_eps": torch.tensor([0.01, float("inf")])}
    save_sweep(run, params, result)
    assert load_sweep(run, params) == {"eps": [0.0, 0.1], "accuracy": [0.5, None], "n": 5, "min_eps": [pytest.approx(0.01), None]}
    assert not is_stale(run, load_record(run, params))  # no weights at either time: nothing to compare
    # a torn or foreign file is "no saved sweep", never an exception
    saved = next((run.path / SWEEP_DIR).glob("*.json"))
    saved.write_text('{"params": 1}')  # valid JSON, not a sweep record
    (run.path / SWEEP_DIR / "zzzz.json").write_text("{not json")  # torn
    assert load_sweep(run, params) is None and latest_sweep(run) is None


def test_saved_sweep_is_stale_after_the_weights_change(digits_run, tmp_path):
    import os
    import shutil

    from engine.runs.sweeps import is_stale, load_record, save_sweep, sweep_params
    from engine.runs.folder import Run

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

    assert main(["attack", str(digits_run.path), "--eps", "0,0.02", "--limit", "10", "--no-min-eps", "--save",
                 "--no-progress"]) == 0
    assert "saved -> " in capsys.readouterr().out
    saved = load_sweep(digits_run, sweep_params([0.0, 0.02], "val", 10, "fgsm", min_eps=False))
    assert saved is not None and saved["eps"] == [0.0, 0.02] and saved["n"] == 10 and "min_eps" not in saved
