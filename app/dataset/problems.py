"""The Dataset page's problem report: unreadable files, exact and near duplicates, leakage across splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from engine.data import Dataset
from app.common.images import THUMB_PX, for_display

MAX_LISTED = 8  # item names listed per duplicate group before "and N more"
GALLERY_GROUPS = 5  # duplicate groups shown as thumbnails on request
GALLERY_ITEMS = 8  # thumbnails per group
TEXT_COLUMN = {"items": st.column_config.TextColumn("items", width="large")}

PROBLEMS = {  # kind -> (one, several)
    "corrupt": ("unreadable file", "unreadable files"),
    "exact": ("group of exact duplicates", "groups of exact duplicates"),
    "near": ("group of near duplicates", "groups of near duplicates"),
    "cross_split": ("duplicate group crossing splits (leakage)", "duplicate groups crossing splits (leakage)"),
}


def problem_counts(stats: dict) -> dict[str, int]:
    """How many of each problem there are (the lists in `stats` may be capped; the counts are not)."""
    dup = stats.get("duplicates") or {}
    totals = {"exact": "num_exact_groups", "near": "num_near_groups", "cross_split": "num_cross_split"}
    counts = {kind: dup.get(total, len(dup.get(kind) or [])) for kind, total in totals.items()}
    return {"corrupt": len(stats.get("corrupt") or []), **counts}


def show_summary(stats: dict) -> None:
    """One line near the top of the page: what is wrong, or that nothing is."""
    found = {k: v for k, v in problem_counts(stats).items() if v}
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
    rows = [{"group": g + 1, "images": len(items), "items": _listing(_names(ds, items))}
            for g, items in enumerate(groups)]  # fmt: skip
    return pd.DataFrame(rows, columns=["group", "images", "items"])


def _table_or_none(title: str, df: pd.DataFrame, total: int, none: str) -> bool:
    """The table under its title, or the `none` line; True when there was something to show."""
    st.markdown(f"**{title}**")
    if df.empty:
        st.caption(none)
        return False
    if total > len(df):
        st.caption(f"The first {len(df):,} of {total:,}.")
    st.dataframe(df, hide_index=True, column_config=TEXT_COLUMN)
    return True


def _gallery(ds: Dataset, groups: list, key: str) -> None:
    """On request, the first groups as thumbnails, so a person can judge whether they really are duplicates."""
    ask = f"Show the first {min(len(groups), GALLERY_GROUPS)} groups' images"
    if not st.toggle(ask, key=f"dataset.gallery.{key}"):
        return
    index = {ds.source.item_id(i): i for i in range(len(ds))}
    for g, items in enumerate(groups[:GALLERY_GROUPS]):
        names = _names(ds, items)
        shown = [n for n in names if n in index][:GALLERY_ITEMS]
        label, images = st.columns([1, 7])
        label.markdown(f"**Group {g + 1}**  \n{len(names):,} images")
        images.image([for_display(ds.thumbnail(index[n])) for n in shown], width=THUMB_PX,
                     caption=[n.rsplit("/", 1)[-1] for n in shown])  # fmt: skip


def show_details(ds: Dataset, stats: dict) -> None:
    """A table per kind of problem, with a clear "none" where there is none."""
    st.subheader("Problems")
    counts = problem_counts(stats)
    dup = stats.get("duplicates") or {}
    if not any(counts.values()) and dup.get("checked"):
        st.success("No problems found: no unreadable files, no exact or near duplicates, no leakage across splits.")
    corrupt = pd.DataFrame(stats.get("corrupt") or [], columns=["path", "reason"])
    _table_or_none("Unreadable files", corrupt, counts["corrupt"], "None: every file decoded.")
    if not dup.get("checked"):
        st.caption("Duplicates were not checked for this dataset.")
        return
    distance = dup.get("max_distance")
    near_title = "Near duplicates (the same picture with small changes" + (
        f": perceptual hashes at most {distance} bits apart)" if distance is not None else ")")
    for key, title in (("exact", "Exact duplicates (identical content)"), ("near", near_title)):
        groups = dup.get(key) or []
        if _table_or_none(title, _groups_table(ds, groups), counts[key], "None found."):
            _gallery(ds, groups, key)
    leaks = dup.get("cross_split") or []
    table = pd.DataFrame(
        [{"splits": " + ".join(c["splits"]), "images": len(c["items"]), "items": _listing(_names(ds, c["items"]))}
         for c in leaks],
        columns=["splits", "images", "items"],
    )  # fmt: skip
    title = "Duplicates crossing splits (leakage: the same picture in train and val/test)"
    if _table_or_none(title, table, counts["cross_split"], "None found."):
        _gallery(ds, [c["items"] for c in leaks], "cross_split")
