"""The run configuration: one flat dataclass, its validation, and its JSON/YAML round trip.

Flat on purpose: each field is one CLI flag (`--batch-size`), one form widget (grouped by the
`group` metadata), and one key in `config.json`. The metadata (group, help, bounds, choices) is the
single source for validation messages, CLI help and the Train page's labels.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.env import env_int
from engine.errors import LoupeError, excerpt

GROUPS = {
    "data": "Which images, at which resolution, and how they are split.",
    "model": "The network, whether it starts from pretrained weights, and which parts train.",
    "imbalance": "How rare classes are kept from being ignored.",
    "augment": "Random changes to training images, applied in batches on the training device.",
    "optim": "How weights are updated: optimiser, learning rate and its schedule.",
    "stopping": "How long to train and when to stop early.",
    "compute": "Device, precision and reproducibility.",
}

STRATEGIES = ("linear_probe", "finetune_last", "finetune_all", "scratch")
IMBALANCE = ("none", "weighted_loss", "weighted_sampler", "undersample", "oversample")
OPTIMIZERS = ("sgd", "adam", "adamw", "nadam")
SCHEDULERS = ("none", "cosine", "onecycle", "step")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: the largest working resolution anything decodes to (a 1024 px cache of 10k RGB images is 31 GB)
MAX_IMAGE_SIZE = 1024
#: YAML nodes a config may hold once its aliases are expanded (env LOUPE_MAX_YAML_NODES): a config has ~60
#: fields, while a 1 KB file of nested aliases ("billion laughs") expands to hundreds of millions of nodes
DEFAULT_MAX_YAML_NODES = 10_000


# What `monitor` can pick per task: the validation record of each task carries these (binary: AUC and HTER;
# multi-label: micro F1 and mAP, and "accuracy" is subset accuracy). 'auto': macro F1 for multi-label, else
# balanced accuracy (`engine.train.records.monitor_name`).
MONITORS = {
    "binary": ("auto", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_auc", "val_hter"),
    "multiclass": ("auto", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1"),
    "multilabel": (
        "auto",
        "val_loss",
        "val_macro_f1",
        "val_micro_f1",
        "val_map",
        "val_accuracy",
        "val_balanced_accuracy",
    ),
}
MONITOR_CHOICES = tuple(dict.fromkeys(m for ms in MONITORS.values() for m in ms))


def monitors_for(task: str | None) -> tuple[str, ...]:
    """The monitor choices that mean something for `task` (every choice when the task is not known yet)."""
    return MONITORS.get(task or "", MONITOR_CHOICES)


class ConfigError(LoupeError):
    """A configuration value out of range or of the wrong kind; names the field."""


def _f(
    default: Any,
    group: str,
    help: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple | None = None,
    lo_open: bool = False,
) -> Any:
    meta = {"group": group, "help": help, "lo": lo, "hi": hi, "choices": choices, "lo_open": lo_open}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    # data
    dataset: str = _f("builtin:fashion-mnist", "data", "dataset spec: builtin:NAME, a folder, a .zip, a .csv or a .npz")
    image_size: int = _f(
        0, "data", "working resolution in pixels (0: the model's or the data's own)", lo=0, hi=MAX_IMAGE_SIZE
    )
    task: str = _f("auto", "data", "task type", choices=("auto", "binary", "multiclass", "multilabel"))
    positive_class: int = _f(1, "data", "binary tasks: index of the positive ('accept') class", lo=0, hi=1)
    val_fraction: float = _f(0.15, "data", "share of images for val when the data has no val split", lo=0.01, hi=0.5)
    test_fraction: float = _f(0.15, "data", "share of images for test when the data has no splits", lo=0.0, hi=0.5)
    train_limit: int = _f(0, "data", "use only this many training images, stratified (0: all)", lo=0)
    # model
    model: str = _f("small_cnn", "model", "small_cnn, facenet, or any timm architecture name")
    pretrained: bool = _f(False, "model", "start from pretrained ImageNet weights")
    weights_file: str = _f("", "model", "a local .safetensors file with pretrained weights")
    allow_scratch: bool = _f(False, "model", "train from scratch when no pretrained weights can be found")
    strategy: str = _f("finetune_all", "model", "which parts train", choices=STRATEGIES)
    finetune_epochs: int = _f(
        0,
        "model",
        "linear probe only: then fine-tune the last stage for this many epochs, starting from the trained head (0: none)",
        lo=0,
        hi=100,
    )
    head: str = _f("linear", "model", "classifier head", choices=("linear", "mlp"))
    dropout: float = _f(0.0, "model", "dropout before the classifier", lo=0.0, hi=0.9)
    # imbalance
    imbalance: str = _f("none", "imbalance", "imbalance handling", choices=IMBALANCE)
    class_weights: list = _f([], "imbalance", "user class weights for weighted_loss (empty: inverse frequency)")
    loss: str = _f(
        "ce",
        "imbalance",
        "ce: cross-entropy (single-label) or binary cross-entropy per label (multi-label); focal: focal loss",
        choices=("ce", "focal"),
    )
    focal_gamma: float = _f(2.0, "imbalance", "focal loss focusing parameter", lo=0.0, hi=10.0)
    label_smoothing: float = _f(0.0, "imbalance", "label smoothing for single-label tasks", lo=0.0, hi=0.5)
    # augment
    hflip: bool = _f(True, "augment", "random horizontal flip")
    rotation: float = _f(0.0, "augment", "max random rotation in degrees (0: off)", lo=0.0, hi=45.0)
    crop_scale: float = _f(1.0, "augment", "random resized crop: smallest area kept (1: off)", lo=0.05, hi=1.0)
    color_jitter: float = _f(0.0, "augment", "brightness/contrast/saturation jitter strength (0: off)", lo=0.0, hi=1.0)
    grayscale_p: float = _f(0.0, "augment", "probability of turning an image grayscale", lo=0.0, hi=1.0)
    translate: float = _f(
        0.0,
        "augment",
        "random translation: largest shift as a share of the image side, in whole pixels, edges reflected (0: off)",
        lo=0.0,
        hi=0.25,
    )
    tta_hflip: bool = _f(
        False,
        "augment",
        "test-time flip: predictions average the probabilities of each image and its mirror image",
    )
    # optim
    optimizer: str = _f("adamw", "optim", "optimiser", choices=OPTIMIZERS)
    lr: float = _f(2e-3, "optim", "peak learning rate", lo=0.0, hi=10.0, lo_open=True)
    weight_decay: float = _f(5e-4, "optim", "weight decay", lo=0.0, hi=1.0)
    momentum: float = _f(0.9, "optim", "SGD momentum", lo=0.0, hi=0.999)
    nesterov: bool = _f(True, "optim", "SGD Nesterov momentum")
    scheduler: str = _f("onecycle", "optim", "learning-rate schedule", choices=SCHEDULERS)
    warmup_epochs: float = _f(0.0, "optim", "linear warm-up length in epochs (cosine/step)", lo=0.0, hi=100.0)
    step_epochs: int = _f(10, "optim", "step schedule: epochs between decays", lo=1)
    step_gamma: float = _f(0.1, "optim", "step schedule: decay factor", lo=0.0, hi=1.0, lo_open=True)
    grad_clip: float = _f(0.0, "optim", "clip gradient norm to this value (0: off)", lo=0.0)
    ema_decay: float = _f(
        0.0,
        "optim",
        "weight averaging: validation, checkpoints and predictions use an exponential moving average of the weights "
        "with this decay per step (e.g. 0.999; 0: off)",
        lo=0.0,
        hi=0.99999,
    )
    # stopping
    epochs: int = _f(10, "stopping", "number of epochs", lo=1, hi=10000)
    batch_size: int = _f(128, "stopping", "training batch size", lo=1, hi=65536)
    patience: int = _f(
        0, "stopping", "early stopping: epochs without improvement, counted after the warm-up (0: off)", lo=0
    )
    monitor: str = _f(
        "auto",
        "stopping",
        "metric that picks the best epoch",
        choices=MONITOR_CHOICES,
    )
    time_budget_s: float = _f(0.0, "stopping", "stop after this many seconds of training (0: no limit)", lo=0.0)
    kfold: int = _f(0, "stopping", "k-fold cross-validation: number of folds (0: off)", lo=0, hi=20)
    # compute
    seed: int = _f(0, "compute", "random seed (splits, init, augmentation)", lo=0)
    deterministic: bool = _f(False, "compute", "deterministic algorithms (slower)")
    precision: str = _f("auto", "compute", "numeric precision (auto: bf16 where supported)", choices=PRECISIONS)
    channels_last: bool = _f(True, "compute", "channels_last memory format")
    device: str = _f("auto", "compute", "auto, cpu, cuda or cuda:N")
    compile: bool = _f(
        False, "compute", "torch.compile the model (its compile time is reported apart from training time)"
    )
    nproc: int = _f(
        1,
        "compute",
        "DDP processes, one per GPU (torchrun --nproc_per_node; gloo on the CPU); 1: one process",
        lo=1,
        hi=64,
    )
    sync_bn: bool = _f(False, "compute", "DDP: synchronise batch-norm statistics across GPUs (GPUs only)")
    name: str = _f("", "compute", "a name for the run (default: model and dataset)")
    max_memory_gb: float = _f(
        0.0,
        "compute",
        "memory budget in GB for the decoded dataset; a larger one is streamed from the cache on disk "
        "(0: half of the available RAM)",
        lo=0.0,
        hi=1e6,
    )
    # data (issue 17): appended here so fields above keep their order
    pseudo_label: float = _f(
        0.0,
        "data",
        "pseudo-labelling: train, add unlabelled images predicted above this confidence (per-class scaled), "
        "retrain (0: off)",
        lo=0.0,
        hi=0.999,
    )

    def validate(self) -> RunConfig:
        """Check every field against its metadata; raise `ConfigError` naming the first bad one."""
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            kind = type(f.default) if f.default is not dataclasses.MISSING else list
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"Field '{f.name}' must be {kind.__name__}, got {excerpt(value)}.")
            if kind is float and not abs(value) < float("inf"):  # NaN passes every < and > bound check
                raise ConfigError(f"Field '{f.name}' must be a finite number; got {value}.")
            if meta["choices"] and value not in meta["choices"]:
                raise ConfigError(
                    f"Field '{f.name}' must be one of {', '.join(meta['choices'])}; got {excerpt(value)}."
                )
            lo, hi = meta["lo"], meta["hi"]
            if lo is not None and (value <= lo if meta["lo_open"] else value < lo):
                raise ConfigError(f"Field '{f.name}' must be {'>' if meta['lo_open'] else '>='} {lo}; got {value}.")
            if hi is not None and value > hi:
                raise ConfigError(f"Field '{f.name}' must be <= {hi}; got {value}.")
        if self.image_size and self.image_size < 8:
            raise ConfigError(
                f"Field 'image_size' must be at least 8 pixels (or 0 for automatic); got {self.image_size}."
            )
        if self.pseudo_label and not 0.5 <= self.pseudo_label < 1:
            raise ConfigError(
                f"Field 'pseudo_label' must be 0 (off) or a confidence from 0.5 to 0.999; got {self.pseudo_label}."
            )
        if self.pseudo_label and (self.kfold or self.strategy == "linear_probe"):
            raise ConfigError(
                "Field 'pseudo_label' works with plain runs; turn off kfold and the linear probe to use it."
            )
        if self.kfold == 1:
            raise ConfigError("Field 'kfold' must be 0 (off) or at least 2.")
        if self.finetune_epochs and self.strategy != "linear_probe":
            raise ConfigError(
                "Field 'finetune_epochs' follows a linear probe's head; set strategy to linear_probe or "
                "finetune_epochs to 0."
            )
        if self.ema_decay and self.strategy == "linear_probe":
            raise ConfigError(
                "Field 'ema_decay': a linear probe's head trains in seconds on fixed features; set ema_decay to 0 or "
                "choose another strategy."
            )
        if self.finetune_epochs and self.kfold:
            raise ConfigError("Field 'finetune_epochs' works with single runs; set kfold to 0 or finetune_epochs to 0.")
        bad_weights = [
            w
            for w in self.class_weights
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < float("inf")  # NaN fails 0 < w
        ]
        if bad_weights:
            raise ConfigError(
                f"Field 'class_weights' must be a list of positive finite numbers, one per class; got "
                f"{excerpt(bad_weights[0])}."
            )
        if self.strategy == "linear_probe" and self.tta_hflip:
            raise ConfigError(
                "Field 'tta_hflip': a linear probe scores cached features of the unflipped images; turn tta_hflip off "
                "or choose another strategy."
            )
        if (
            self.strategy == "linear_probe"
            and self.model in ("small_cnn", "small_resnet", "facenet")
            and not self.weights_file
        ):
            raise ConfigError(
                "Field 'strategy': a linear probe needs a pretrained backbone; choose a timm model with pretrained weights."
            )
        return self

    # --- round trip -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown config field(s) {excerpt(unknown)}; see `python -m engine train --help` for the fields."
            )
        return cls(**data).validate()

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a config from JSON or YAML; a run's config.json (with extra sections) works too."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"Cannot read the config file '{path}' ({e.strerror}).") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                data = load_yaml(text, path) or {}
            else:
                data = json.loads(text)
        except LoupeError:  # a ConfigError from the YAML reader, or an EnvError from its budget
            raise
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"The config file '{path}' is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}."
            ) from None
        except Exception as e:
            raise ConfigError(
                f"The config file '{path}' is not valid {path.suffix[1:].upper() or 'JSON'} ({excerpt(str(e))})."
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"The config file '{path}' must hold a mapping of field names to values.")
        data = data.get("config", data)  # a run folder's config.json nests the fields under "config"
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes).validate()


def load_yaml(text: str, path: Path) -> Any:
    """`yaml.safe_load` with a budget on the nodes its aliases expand to, and errors as one sentence.

    PyYAML shares an aliased node rather than copying it, so a billion-laughs file loads in microseconds
    but becomes hundreds of megabytes the moment anything walks it (validation, JSON, an error message);
    the composed graph is measured before it is built, counting each alias as the whole subtree it stands for.
    """
    import yaml

    budget = env_int("LOUPE_MAX_YAML_NODES", DEFAULT_MAX_YAML_NODES)
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:  # expanded size, memoised per node: linear in the file, not in the expansion
        if id(n) not in sizes:
            sizes[id(n)] = 0  # a node reached again while being measured is a recursive alias
            if isinstance(n, yaml.MappingNode):
                total = 1 + sum(size(k) + size(v) for k, v in n.value)
            elif isinstance(n, yaml.SequenceNode):
                total = 1 + sum(size(v) for v in n.value)
            else:
                total = 1
            sizes[id(n)] = total
            if total > budget:
                raise ConfigError(
                    f"The config file '{path}' expands to more than {budget:,} YAML nodes through its aliases "
                    "(&anchor and *alias); write the values out, or raise LOUPE_MAX_YAML_NODES."
                )
        return sizes[id(n)]

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size(node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:  # PyYAML's own message spans several lines: one sentence, line and column
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"The config file '{path}' is not valid YAML: {excerpt(e.problem or e.context or 'unreadable', 80)[1:-1]}"
            f"{where}."
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"The config file '{path}' is not valid YAML ({excerpt(str(e))}).") from None
    except RecursionError:
        raise ConfigError(
            f"The config file '{path}' is nested too deeply; a config is a flat mapping of field names to values."
        ) from None
    finally:
        loader.dispose()


def field_groups() -> dict[str, list[dataclasses.Field]]:
    """Fields by group, in declaration order: what the Train page and `train --help` lay out."""
    out: dict[str, list[dataclasses.Field]] = {g: [] for g in GROUPS}
    for f in fields(RunConfig):
        out[f.metadata["group"]].append(f)
    return out
