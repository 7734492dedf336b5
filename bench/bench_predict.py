"""Warm latency per 224 px image of builtin:imagenet (efficientnet-lite0) through `Predictor`, batch 1 and 16.

    .venv/bin/python bench/bench_predict.py [--repeat 5]

Measures the whole path a Predict-page upload takes: JPEG bytes -> the one decoder (EXIF, modes) ->
timm's eval resize/centre crop -> forward -> softmax -> decision dicts. Also times the forward pass alone,
so decode and model cost can be told apart. Target: < 150 ms per image on the project's 2-core CPU.
"""

from __future__ import annotations

import argparse
import io
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from common import load, machine, timed  # noqa: E402
from PIL import Image  # noqa: E402

from engine.predict.predictor import Predictor  # noqa: E402
from engine.predict.run_model import predict_tensor  # noqa: E402


def photos(n: int) -> list[tuple[str, bytes]]:
    """Real photos (skimage chelsea / coffee / astronaut, about 0.2-0.3 MP) as JPEG bytes."""
    from skimage import data

    srcs = [data.chelsea(), data.coffee(), data.astronaut()]
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(srcs[i % len(srcs)]).save(buf, "JPEG", quality=90)
        out.append((f"{i}.jpg", buf.getvalue()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    print(machine())
    with timed() as t:
        p = Predictor.from_ref("builtin:imagenet")
    print(f"cold load: {t.seconds:.2f} s ({p.name})")
    rows = []
    for batch in (1, 16):
        items = photos(batch)
        for _ in range(3):  # warm-up: oneDNN builds its kernels for each new batch shape over a few calls
            p.predict_bytes(items)
        best = min(_time(lambda items=items: p.predict_bytes(items)) for _ in range(args.repeat))
        x = torch.rand(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        forward = lambda x=x: _forward(p, x)  # noqa: E731
        forward()
        fwd = min(_time(forward) for _ in range(args.repeat))
        rows.append((batch, best / batch * 1000, fwd / batch * 1000, batch / best))
    print("\n| batch | ms per image (bytes -> decisions) | ms per image (forward only) | images/s |\n|---|---|---|---|")
    for b, ms, fms, ips in rows:
        print(f"| {b} | {ms:.1f} | {fms:.1f} | {ips:.1f} |")
    print(f"\nbest of {args.repeat}; torch threads {torch.get_num_threads()}; {load()}")


def _forward(p: Predictor, x: torch.Tensor) -> None:
    """The model alone, under the same compute settings (bf16 autocast, channels_last) as the Predictor."""
    with p.compute.autocast():
        predict_tensor(p.rm, x)


def _time(fn) -> float:
    with timed() as t:
        fn()
    return t.seconds


if __name__ == "__main__":
    main()
