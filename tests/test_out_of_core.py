"""Out-of-core training: a dataset larger than the memory budget is streamed from the decoded cache on disk,
and gives exactly what the in-memory path gives for the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.config import ConfigError, RunConfig
from engine.device import resolve_compute
from engine.models.factory import build_model
from engine.train.feed import StreamedData, memory_budget_bytes, open_data
from engine.train.loop import DeviceData, predict_probs
from tests.test_train import run_fit, tiny


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run.path / "checkpoints" / "last.safetensors"))


def test_a_dataset_over_the_budget_trains_streamed_with_identical_weights_and_metrics(tmp_path: Path):
    """Same seed, same flips and crops: the streamed run (a budget of 1 kB, far below the digits cache)
    must end with bit-identical weights, validation records and test predictions."""
    cfg = dict(epochs=2, train_limit=300, hflip=True, crop_scale=0.8, seed=5)
    memory, mem_summary = run_fit(tmp_path / "memory", tiny(**cfg))
    streamed, str_summary = run_fit(tmp_path / "streamed", tiny(**cfg, max_memory_gb=1e-6))
    assert any("larger than the memory budget" in n for n in str_summary["notes"])
    assert not any("larger than the memory budget" in n for n in mem_summary["notes"])
    a, b = _weights(memory), _weights(streamed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    def val(run) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k not in ("img_per_s", "time")} for r in run.metrics() if r["split"] == "val"
        ]

    assert val(memory) == val(streamed) and len(val(memory)) == 2
    for split in ("val", "test"):
        pm, ps = (
            np.load(memory.path / "predictions" / f"{split}.npz"),
            np.load(streamed.path / "predictions" / f"{split}.npz"),
        )
        np.testing.assert_array_equal(pm["probs"], ps["probs"])
    assert mem_summary["final"] == str_summary["final"]


def test_streamed_batches_equal_in_memory_batches_in_the_batch_order(tmp_path: Path):
    """Rows are read in ascending order from the file (our own map of it) but returned in the order asked,
    repeats included; prefetched batches and batches never prefetched give the same tensors."""
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(300, 6, 6, 3))
    images[:] = rng.integers(0, 256, images.shape, dtype=np.uint8)
    images.flush()
    mapped = np.load(path, mmap_mode="r")
    labels = rng.integers(0, 4, 300)
    memory = DeviceData(mapped, labels, torch.device("cpu"), multilabel=False)
    streamed = open_data(mapped, labels, torch.device("cpu"), multilabel=False, max_memory_gb=1e-9)
    assert isinstance(streamed, StreamedData) and streamed._map is not None
    batches = [rng.integers(0, 300, 17) for _ in range(5)] + [np.array([299, 0, 299, 5])]
    streamed.prefetch(batches[1:3])
    for idx in batches:
        (xm, ym), (xs, ys) = memory.batch(idx), streamed.batch(idx)
        assert torch.equal(xm, xs) and torch.equal(ym, ys)
    model, _ = build_model("small_cnn", 4, in_chans=3, allow_scratch=True, image_size=6)
    compute = resolve_compute("cpu", "fp32", channels_last=True)
    order = rng.permutation(300)
    np.testing.assert_array_equal(
        predict_probs(model, memory, order, compute, False, batch_size=64),
        predict_probs(model, streamed, order, compute, False, batch_size=64),
    )
    streamed.close()


def test_the_budget_is_the_flag_split_between_local_processes_and_is_validated(monkeypatch: pytest.MonkeyPatch):
    assert memory_budget_bytes(2.0) == 2_000_000_000
    assert memory_budget_bytes(2.0, processes_here=4) == 500_000_000
    monkeypatch.setattr("engine.train.feed.available_memory_bytes", lambda: 8_000_000_000)
    assert memory_budget_bytes(0.0) == 4_000_000_000  # auto: half of the available RAM
    small = np.zeros((10, 4, 4, 1), np.uint8)  # 160 bytes
    assert type(open_data(small, np.zeros(10), torch.device("cpu"), False, 0.0)) is DeviceData
    for bad in (-1.0, float("nan"), "2"):
        with pytest.raises(ConfigError, match="max_memory_gb"):
            RunConfig(dataset="builtin:digits", max_memory_gb=bad).validate()
    assert json.loads(json.dumps(RunConfig(max_memory_gb=3.5).to_dict()))["max_memory_gb"] == 3.5
