"""Label subsets for the built-in ImageNet model: "dogs and cats only", or a user's own list of classes.

Why: `builtin:imagenet` answers among 1000 classes, so a clear beagle photo spreads its probability over
the neighbouring breeds, foxes and unrelated objects and often reads "54% beagle". When the user knows the
photo shows a pet, restricting the answer to the pet classes and renormalising over them is the honest
way to ask "which of these is it?". The restriction is a smaller head: the pretrained classifier's rows of
the chosen classes (`subset_head`), so softmax over its logits is exactly the 1000-way probabilities
renormalised over the subset (their order is unchanged), and Grad-CAM, top-k and the unsure margin all
work on the subset as on any model.

A subset is named (`NAMED`: `dogs-cats`, `dogs`, `cats`), a comma list of ImageNet class names, or a text
file with one name per line; names are matched case-insensitively against the names Loupe shows
(`imagenet_classes`) and timm's synonyms, and unknown names are refused with one sentence naming them.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.errors import LoupeError

#: ImageNet-1k indices of the dog breeds (Chihuahua .. Mexican hairless; wolves, foxes and wild dogs excluded)
DOG_INDICES = tuple(range(151, 269))
#: ImageNet-1k indices of the domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian cat; big cats excluded)
CAT_INDICES = tuple(range(281, 286))
#: the named subsets: name -> (what it is, for people; the class indices)
NAMED: dict[str, tuple[str, tuple[int, ...]]] = {
    "dogs-cats": ("dogs and cats only", DOG_INDICES + CAT_INDICES),
    "dogs": ("dogs only", DOG_INDICES),
    "cats": ("cats only", CAT_INDICES),
}
ALL = "all"  # no subset: the 1000 classes
LIST_SUFFIXES = (".txt", ".csv", ".lst", ".list")  # a value ending so is a file, even when it is missing
MAX_FILE_BYTES = 1_000_000  # a list of ImageNet class names is a few kB; anything larger is not one


class LabelSubsetError(LoupeError):
    """A label subset that names unknown classes, or a list file that cannot be read."""


@dataclass(frozen=True)
class LabelSubset:
    """Which of the 1000 ImageNet classes the built-in model may answer with, in ImageNet order."""

    name: str  # 'dogs-cats', or 'custom' for a user's list
    title: str  # for people: 'dogs and cats only', 'your list'
    indices: tuple[int, ...]

    def describe(self, total: int = 1000) -> str:
        """'labels: dogs-cats (dogs and cats only, 123 of 1000 classes)': how results name the subset."""
        return f"labels: {self.name} ({self.title}, {len(self.indices)} of {total} classes)"


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """ImageNet-1k names from timm (first synonym; the full description where the first is ambiguous)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    full = [info.index_to_description(i) for i in range(1000)]
    short = [d.split(",")[0].strip() for d in full]
    return tuple(s if short.count(s) == 1 else f for s, f in zip(short, full))


def _names() -> tuple[str, ...]:
    return imagenet_classes()


@functools.lru_cache(maxsize=1)
def _lookup() -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(shown name -> indices, synonym -> indices), both lower-case. A few shown names are shared
    ('crane' is a bird and a machine in timm's descriptions), so both map to tuples."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    shown: dict[str, tuple[int, ...]] = {}
    for i, n in enumerate(_names()):
        shown[n.lower()] = (*shown.get(n.lower(), ()), i)
    synonyms: dict[str, tuple[int, ...]] = {}
    for i in range(1000):
        for s in info.index_to_description(i).split(","):
            key = s.strip().lower()
            if key:
                synonyms[key] = (*synonyms.get(key, ()), i)
    return shown, synonyms


def class_indices(names: list[str]) -> tuple[int, ...]:
    """The ImageNet indices of `names` (shown names or unambiguous synonyms, any case), sorted and unique.

    Raises `LabelSubsetError` naming every unknown or ambiguous name (with the closest known names)."""
    shown, synonyms = _lookup()
    found: set[int] = set()
    unknown, ambiguous = [], []
    for raw in names:
        key = raw.strip().lower()
        hits = shown.get(key) or synonyms.get(key, ())
        if len(hits) == 1:
            found.add(hits[0])
        elif hits:
            ambiguous.append(raw.strip())
        else:
            unknown.append(raw.strip())
    if ambiguous:
        a = ambiguous[0]
        raise LabelSubsetError(
            f"The label name '{a}' matches {len(shown.get(a.lower()) or synonyms[a.lower()])} ImageNet classes "
            "(timm gives them the same name); leave it out or use a name only one of them has."
        )
    if unknown:
        hints = difflib.get_close_matches(unknown[0].lower(), list(shown), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(_names()[shown[h][0]]) for h in hints)}?)" if hints else ""
        shown_unknown = ", ".join(repr(u) for u in unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise LabelSubsetError(
            f"Unknown ImageNet class name(s) {shown_unknown}{hint}; give {', '.join(NAMED)}, {ALL}, a comma list "
            "of the names the built-in model shows (e.g. 'beagle,tabby') or a text file with one name a line."
        )
    if not found:
        raise LabelSubsetError("The label list names no ImageNet class; give at least one name (e.g. 'beagle').")
    return tuple(sorted(found))


def resolve_labels(spec: str | None, files: bool = True) -> LabelSubset | None:
    """A `--labels` value: None/''/'all' (every class), a named subset, a text file (one name per line,
    '#' comments) or a comma list of class names. Validated here, where the value enters.

    `files=False` (the app: the text comes from a browser) never reads a file, so a page visitor cannot
    make the server echo a file's lines back in an error."""
    spec = (spec or "").strip()
    if not spec or spec.lower() == ALL:
        return None
    if spec.lower() in NAMED:
        title, idx = NAMED[spec.lower()]
        return LabelSubset(spec.lower(), title, idx)
    path = Path(spec).expanduser()
    if files and "," not in spec and (path.is_file() or path.suffix.lower() in LIST_SUFFIXES):
        return LabelSubset("custom", f"the list in {path.name}", class_indices(_read_list(path)))
    return LabelSubset("custom", "your list", class_indices([n for n in spec.split(",") if n.strip()]))


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise LabelSubsetError(
            f"The label list file '{path}' does not exist; give an existing text file or a comma list."
        )
    if path.stat().st_size > MAX_FILE_BYTES:
        raise LabelSubsetError(
            f"The label list file '{path}' is larger than {MAX_FILE_BYTES // 1000} kB; it should hold one class name a line."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelSubsetError(
            f"The label list file '{path}' cannot be read as UTF-8 text ({type(e).__name__})."
        ) from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def subset_head(head: nn.Linear, indices: tuple[int, ...]) -> nn.Linear:
    """The pretrained classifier restricted to `indices`: softmax over its logits is the full softmax
    renormalised over the subset (the same ratios, so the same order)."""
    idx = torch.as_tensor(indices, dtype=torch.long, device=head.weight.device)
    out = nn.Linear(head.in_features, len(indices), bias=head.bias is not None).to(
        head.weight.device, head.weight.dtype
    )
    with torch.no_grad():
        out.weight.copy_(head.weight[idx])
        if head.bias is not None:
            out.bias.copy_(head.bias[idx])
    return out
