"""The Dataset page's problem report: label conflicts first (the same picture under different labels), then
data-quality warnings, unreadable files, exact and near duplicates, and leakage across splits.

Every thumbnail of a duplicate carries its label and its folder/file name: whether two copies disagree, and
where each one lives, is what a person needs to fix the files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app.common.images import THUMB_PX, for_display
from engine.data import Dataset

MAX_LISTED = 8  # item names listed per duplicate group before "and N more"
GALLERY_GROUPS = 5  # duplicate groups shown as thumbnails on request (label conflicts: always)
GALLERY_ITEMS = 8  # thumbnails per group
TEXT_COLUMN = {"items": st.column_config.TextColumn("items", width="large")}
MAX_TABLE_ROWS = 20  # up to this many rows a table is drawn whole, its long names wrapped; above, a scrolling grid

PROBLEMS = {  # kind -> (one, several), in the order they are listed: the worst first
    "label_conflicts": (
        "label conflict (the same picture under different labels)",
        "label conflicts (the same picture under different labels)",
    ),
    "corrupt": ("unreadable file", "unreadable files"),
    "exact": ("group of exact duplicates", "groups of exact duplicates"),
    "near": ("group of near duplicates", "groups of near duplicates"),
    "cross_split": ("duplicate group crossing splits (leakage)", "duplicate groups crossing splits (leakage)"),
}


def problem_counts(stats: dict) -> dict[str, int]:
    """How many of each problem there are (the lists in `stats` may be capped; the counts are not)."""
    dup = stats.get("duplicates") or {}
    totals = {
        "label_conflicts": "num_label_conflicts",
        "exact": "num_exact_groups",
        "near": "num_near_groups",
        "cross_split": "num_cross_split",
    }
    counts = {kind: dup.get(total, len(dup.get(kind) or [])) for kind, total in totals.items()}
    counts["corrupt"] = len(stats.get("corrupt") or [])
    return {kind: counts[kind] for kind in PROBLEMS}


def warning_text(warning: dict) -> str:
    """A data-quality warning on the page: its message, with the Train page's control that follows its advice
    (the terminal names the `train` flag instead: `engine.data.stats.warning_text`)."""
    if warning.get("kfold"):
        from app.train.form import control

        return (
            f"{warning['message'].removesuffix('.')}: on the Train page, set {control('kfold')} to {warning['kfold']}."
        )
    return warning["message"]


def show_summary(stats: dict) -> None:
    """Near the top of the page: label conflicts in a box of their own, each data-quality warning (an
    evaluation split with a handful of images per class), then one line of what is wrong, or that nothing is."""
    counts = problem_counts(stats)
    if n := counts["label_conflicts"]:
        st.warning(
            f"**{n:,} label conflict{'s' if n != 1 else ''}:** the same picture is filed under different "
            "labels, so the model is taught both answers and a copy in val or test is scored wrong whatever "
            "it predicts. Keep one copy under the right label (listed first under Problems below).",
            icon=":material/report:",
        )
    for warning in stats.get("warnings") or []:
        st.warning(warning_text(warning), icon=":material/warning:")
    found = {k: v for k, v in counts.items() if v}
    checked = (stats.get("duplicates") or {}).get("checked", False)
    if found:
        parts = [f"{v:,} {PROBLEMS[k][v != 1]}" for k, v in found.items()]
        st.warning("Problems found: " + ", ".join(parts) + " (details below).")
    elif checked:
        st.success("No problems found: every file is readable and no duplicates were found.")
    else:
        st.success("Every file is readable (duplicates were not checked).")


def _names(ds: Dataset, items: list) -> list[str]:
    return [ds.source.item_id(int(x)) if isinstance(x, (int, np.integer)) else str(x) for x in items]


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" … and {len(names) - MAX_LISTED:,} more" if len(names) > MAX_LISTED else "")


def _groups_table(ds: Dataset, groups: list) -> pd.DataFrame:
    rows = [
        {"group": g + 1, "images": len(items), "items": _listing(_names(ds, items))} for g, items in enumerate(groups)
    ]
    return pd.DataFrame(rows, columns=["group", "images", "items"])


def _table_or_none(title: str, df: pd.DataFrame, total: int, none: str) -> bool:
    """The table under its title, or the `none` line; True when there was something to show."""
    st.markdown(f"**{title}**")
    if df.empty:
        st.caption(none)
        return False
    if total > len(df):
        st.caption(f"The first {len(df):,} of {total:,}.")
    draw_table(df)
    return True


def draw_table(df: pd.DataFrame) -> None:
    """A short table whole, with long file names and reasons wrapped (its first column as the row names); a
    long one as a scrolling grid, where a cell shows its whole text when clicked."""
    if len(df) <= MAX_TABLE_ROWS:
        first = df.columns[0]  # as text: a run of integers as the index would be taken for a row number and hidden
        st.table(df.astype({first: str}).set_index(first))
    else:
        st.dataframe(df, hide_index=True, column_config=TEXT_COLUMN)


def thumbnail_caption(ds: Dataset, i: int) -> str:
    """A duplicate's caption: its label, then its folder/file name ("positives · positives/img_0412.jpg")."""
    return f"{' + '.join(ds.label_names(i)) or '(no label)'} · {ds.source.item_id(i)}"


def _group_rows(ds: Dataset, groups: list, heading) -> None:
    """Each group as a row of thumbnails, every one captioned with its label and folder/file name."""
    index = {ds.source.item_id(i): i for i in range(len(ds))}
    for g, items in enumerate(groups[:GALLERY_GROUPS]):
        shown = [index[n] for n in _names(ds, items) if n in index][:GALLERY_ITEMS]
        label, images = st.columns([1, 7])
        label.markdown(heading(g, items))
        images.image(
            [for_display(ds.thumbnail(i)) for i in shown],
            width=THUMB_PX,
            caption=[thumbnail_caption(ds, i) for i in shown],
        )


def _gallery(ds: Dataset, groups: list, key: str) -> None:
    """On request, the first groups as thumbnails, so a person can judge whether they really are duplicates."""
    shown = min(len(groups), GALLERY_GROUPS)
    ask = "Show the group's images" if len(groups) == 1 else f"Show the first {shown} groups' images"
    if st.toggle(ask, key=f"dataset.gallery.{key}"):
        _group_rows(ds, groups, lambda g, items: f"**Group {g + 1}**  \n{len(items):,} images")


def show_label_conflicts(ds: Dataset, dup: dict, total: int) -> None:
    """The label conflicts: a table of every group's copies and labels, and the first groups' pictures."""
    conflicts = dup.get("label_conflicts") or []
    st.markdown("**Label conflicts (the same picture under different labels)**")
    if not conflicts:
        st.caption("None found: every duplicate's copies carry the same label.")
        return
    if total > len(conflicts):
        st.caption(f"The first {len(conflicts):,} of {total:,}.")
    rows = [
        {
            "group": g + 1,
            "copies": "exact" if c["kind"] == "exact" else "near",
            "labels": " vs ".join(dict.fromkeys(c["labels"])),
            "items": _listing([f"{item} ({label})" for item, label in zip(c["items"], c["labels"])]),
        }
        for g, c in enumerate(conflicts)
    ]
    draw_table(pd.DataFrame(rows))
    _group_rows(
        ds,
        [c["items"] for c in conflicts],
        lambda g, items: (
            f"**Conflict {g + 1}**  \n{len(items):,} images, "
            f"{'identical' if conflicts[g]['kind'] == 'exact' else 'near copies'}"
        ),
    )


def show_details(ds: Dataset, stats: dict) -> None:
    """A table per kind of problem, the label conflicts first, with a clear "none" where there is none."""
    st.subheader("Problems")
    counts = problem_counts(stats)
    dup = stats.get("duplicates") or {}
    if not any(counts.values()) and dup.get("checked"):
        st.success("No problems found: no unreadable files, no exact or near duplicates, no leakage across splits.")
    if dup.get("checked"):
        show_label_conflicts(ds, dup, counts["label_conflicts"])
    corrupt = pd.DataFrame(stats.get("corrupt") or [], columns=["path", "reason"])
    _table_or_none("Unreadable files", corrupt, counts["corrupt"], "None: every file decoded.")
    if not dup.get("checked"):
        st.caption("Duplicates were not checked for this dataset.")
        return
    distance = dup.get("max_distance")
    near_title = "Near duplicates (the same picture with small changes" + (
        f": perceptual hashes at most {distance} bits apart)" if distance is not None else ")"
    )
    for key, title in (("exact", "Exact duplicates (identical content)"), ("near", near_title)):
        groups = dup.get(key) or []
        if _table_or_none(title, _groups_table(ds, groups), counts[key], "None found."):
            _gallery(ds, groups, key)
    leaks = dup.get("cross_split") or []
    table = pd.DataFrame(
        [
            {"splits": " + ".join(c["splits"]), "images": len(c["items"]), "items": _listing(_names(ds, c["items"]))}
            for c in leaks
        ],
        columns=["splits", "images", "items"],
    )
    title = "Duplicates crossing splits (leakage: the same picture in train and val/test)"
    if _table_or_none(title, table, counts["cross_split"], "None found."):
        _gallery(ds, [c["items"] for c in leaks], "cross_split")
