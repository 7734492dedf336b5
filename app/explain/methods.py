"""The attribution panel of the Explain page: methods side by side (heatmap + overlay), each with its
faithfulness figure (deletion-curve AUC) and time, and how positive / negative attributions are shown.

Explanations are cached per run weights, image, method, target and baseline (`st.cache_data`), so changing
the overlay's opacity, colour map or sign never recomputes them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from app.common.images import THUMB_PX, for_display
from app.common.loaders import weights_key
from app.explain import charts
from engine.errors import LoupeError
from engine.metrics.display import MISSING, finite, number

DEFAULT_METHODS = ("gradcam", "saliency")  # fast; matched loosely against engine.explain.attributions.METHODS
SIGNS = {
    "positive": "Positive only: evidence *for* the target class",
    "absolute": "Absolute: how much each pixel matters, either way",
    "all": "Both: red for, blue against",
}
SIGN_HELP = (
    "Attribution methods give each pixel a signed score: positive pixels raise the target class's score, negative "
    "ones lower it (evidence for another class). **Positive** shows the evidence for the target; **Absolute** shows "
    "importance whatever its direction (the usual view for gradient saliency, whose sign is noisy); **Both** uses a "
    "diverging map centred on zero. Grad-CAM is positive by construction (a ReLU), so its three views are the same."
)


def helps() -> dict[str, str]:
    """What each faithfulness column means (its tooltip), keyed by the table's column names."""
    from engine.explain.faithfulness import CHEAP_FOR_SENSITIVITY

    return {
        "deletion AUC (lower is better)": "Deletion AUC: the target's probability as the most-attributed pixels are "
        "removed (replaced by the baseline), integrated over the share removed; "
        "lower means the map found what the model uses.",
        "infidelity": "Infidelity (Captum): how badly the map predicts the logit change under small noise; lower is "
        "better.",
        "max-sensitivity": "Max-sensitivity (Captum): how much the map moves when the input moves slightly; lower is "
        "more stable. It re-runs the method several times, so it is computed for the fast methods "
        f"only ({', '.join(CHEAP_FOR_SENSITIVITY)}): n/a for the others.",
    }


def scientific(value: object, digits: int = 2) -> str:
    """A score that spans orders of magnitude (infidelity) in scientific notation; "n/a" when missing."""
    return f"{float(value):.{digits}e}" if finite(value) else MISSING


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def default_methods(methods: Sequence[str]) -> list[str]:
    wanted = [m for m in methods if any(_norm(m) == d or _norm(m).startswith(d) for d in DEFAULT_METHODS)]
    return wanted or list(methods[:2])


def as_array(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().float().cpu().numpy()
    return np.asarray(v, dtype=np.float32)


def run_key(run) -> tuple:
    return (str(run.path), weights_key(run))


@st.cache_data(show_spinner=False, max_entries=256)
def explanation(rkey: tuple, image_key: str, method: str, target: int, baseline: str, _rm, _x) -> dict:
    """`explain` + `deletion_curve` as plain data (picklable), cached by run, image and settings."""
    from engine.explain.attributions import deletion_curve, explain
    from engine.explain.faithfulness import faithfulness

    e = explain(_rm, _x, method, target=target, baseline=baseline)
    heatmap = as_array(e.heatmap)
    curve = deletion_curve(_rm, _x, heatmap, target, baseline=baseline)
    scores = faithfulness(_rm, _x, heatmap, method, int(e.target) if e.target is not None else target)
    curve = {
        "fractions": as_array(curve["fractions"]).tolist(),
        "probs": as_array(curve["probs"]).tolist(),
        "auc": float(curve["auc"]),
    }
    return {
        "method": e.method,
        "target": int(e.target) if e.target is not None else target,
        "heatmap": heatmap,
        "seconds": float(e.seconds),
        "params": dict(e.params or {}),
        "curve": curve,
        "scores": scores,
    }


def settings(
    classes: Sequence[str], predicted: int, key: str, scope: str = "", accepted: Sequence[int] | None = None
) -> dict:
    """The method / target / display controls; returns the choices. The class selector's labels name the
    predicted class, so it belongs to one image: its key carries `scope` (`load.scope`), and a value that is
    not one of its options (say, from an older session) is dropped, never compared.

    Multi-label (`accepted` given: the labels the run decides): several labels can be explained side by side,
    the accepted ones by default (the most probable label when none is accepted)."""
    from engine.explain.attributions import METHODS

    names = list(METHODS)
    mkey = f"{key}.methods"
    if mkey not in st.session_state:
        st.session_state[mkey] = default_methods(names)
    c1, c2, c3 = st.columns([3, 2, 2])
    methods = c1.multiselect(
        "Methods", names, key=mkey, format_func=str, help="\n\n".join(f"**{n}**: {d}" for n, d in METHODS.items())
    )
    tkey = f"{key}.target.{scope}" if scope else f"{key}.target"
    targets: list[int] | None = None
    if accepted is not None:
        mkey_t = f"{key}.targets.{scope}" if scope else f"{key}.targets"
        chosen = st.session_state.get(mkey_t)
        if not isinstance(chosen, list) or not all(valid_choice(v, len(classes)) for v in chosen):
            st.session_state[mkey_t] = list(accepted) or [predicted]
        targets = c2.multiselect(
            "Explain the labels",
            list(range(len(classes))),
            key=mkey_t,
            format_func=lambda i: f"{classes[i]}" + (" (accepted)" if i in accepted else ""),
            help="Each chosen label gets its own map, side by side: what in the image supports that label. The "
            "labels the run accepts (probability at or above their thresholds) are chosen first.",
        )
        target = targets[0] if targets else predicted
    else:
        if not valid_choice(st.session_state.get(tkey), len(classes)):
            st.session_state.pop(tkey, None)
        target = c2.selectbox(
            "Explain the class",
            range(len(classes)),
            index=predicted,
            key=tkey,
            format_func=lambda i: f"{classes[i]}" + (" (predicted)" if i == predicted else ""),
            help="Attributions answer 'what in the image supports this class?'. Pick another class to "
            "see what argues for it.",
        )
    baseline = c3.selectbox(
        "Baseline",
        ["black", "blur", "noise"],
        key=f"{key}.baseline",
        help="The 'absence of signal' that path and occlusion methods compare with "
        "(Integrated Gradients, occlusion); Grad-CAM and saliency ignore it.",
    )
    d1, d2, d3 = st.columns([3, 2, 2])
    sign = d1.radio("Show attributions", list(SIGNS), format_func=SIGNS.get, key=f"{key}.sign", help=SIGN_HELP)
    alpha = d2.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key=f"{key}.alpha")
    cmap = d3.selectbox("Colour map", ["jet", "inferno", "viridis", "RdBu_r"], key=f"{key}.cmap")
    if sign == "all" and cmap != "RdBu_r":
        d3.caption("Tip: a diverging map (RdBu_r) reads best for signed attributions.")
    target = int(target) if valid_choice(target, len(classes)) else predicted
    return {
        "methods": methods,
        "target": target,
        "targets": [int(t) for t in targets] if targets else [target],
        "baseline": baseline,
        "sign": sign,
        "alpha": float(alpha),
        "cmap": cmap,
    }


def valid_choice(value: object, n: int) -> bool:
    """True for a class index of this run (an int in [0, n)); False for anything else, a label string included."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < n


def show_map(pixels: np.ndarray, heatmap: np.ndarray, opts: dict, col, caption: str) -> None:
    """Heatmap and overlay of one explanation in `col`."""
    from engine.explain.attributions import heatmap_image, overlay

    heat = heatmap_image(heatmap, opts["cmap"], opts["sign"])
    over = overlay(pixels, heatmap, alpha=opts["alpha"], cmap=opts["cmap"], sign=opts["sign"])
    col.image(
        [for_display(np.asarray(heat, dtype=np.uint8)), for_display(np.asarray(over, dtype=np.uint8))],
        caption=[f"{caption} · heatmap", f"{caption} · overlay"],
        width=THUMB_PX + 64,
    )


def coarse_note(ex: dict, rm) -> str | None:
    """The warning for a Grad-CAM map read from a feature map too small to mean anything, else None."""
    from engine.explain.gradcam import coarse_warning

    return coarse_warning(ex.get("params", {}).get("feature_map"), int(getattr(rm, "image_size", 0) or 0) or None)


def _scores(ex: dict) -> dict[str, str]:
    return {
        "Deletion AUC": number(ex["curve"]["auc"]),
        "infidelity": scientific(ex["scores"].get("infidelity")),
        "max-sensitivity": number(ex["scores"].get("max_sensitivity")),
    }


def _score_caption(col, ex: dict, scores: dict[str, str]) -> None:
    # one figure a line: the columns are narrow, and a line broken inside "1.45e-05" misreads
    col.caption(
        "  \n".join(
            [
                *(f"{k} **{v}**" if k == "Deletion AUC" else f"{k} {v}" for k, v in scores.items()),
                f"{ex['seconds'] * 1000:,.0f} ms",
            ]
        ),
        help=" ".join(["Lower is better for all three.", *helps().values()]),
    )


def panel(
    run,
    rm,
    picked,
    classes: Sequence[str],
    predicted: int,
    key: str = "expl",
    scope: str = "",
    accepted: Sequence[int] | None = None,
) -> dict:
    """Draw the attribution panel; returns the settings (the adversarial panel reuses them). Multi-label runs
    (`accepted` given) can map several labels side by side: one row per method, one column per label."""
    opts = settings(classes, predicted, key, scope, accepted)
    if not opts["methods"]:
        st.caption("Choose at least one method.")
        return opts
    if accepted is not None and not opts["targets"]:
        st.caption("Choose at least one label to explain.")
        return opts
    rkey = run_key(run)
    side_by_side = accepted is not None and len(opts["targets"]) > 1
    curves, rows, warned = {}, [], set()
    if side_by_side:
        for method in opts["methods"]:
            st.markdown(f"**{method}**")
            cols = st.columns(1 + len(opts["targets"]))
            cols[0].image(for_display(picked.pixels), caption="original", width=THUMB_PX + 64)
            for col, target in zip(cols[1:], opts["targets"]):
                name = str(classes[target])
                col.markdown(f"**{name}**" + (" · accepted" if target in accepted else " · rejected"))
                ex = _explain(col, rkey, picked, method, target, opts, rm)
                if ex is None:
                    continue
                show_map(picked.pixels, ex["heatmap"], opts, col, f"{method} · {name}")
                scores = _scores(ex)
                _score_caption(col, ex, scores)
                _warn_coarse(ex, rm, warned)
                curves[f"{method} · {name}"] = ex["curve"]
                rows.append(_row(f"{method}", scores, ex, name))
    else:
        cols = st.columns(1 + len(opts["methods"]))
        cols[0].image(for_display(picked.pixels), caption="original", width=THUMB_PX + 64)
        for col, method in zip(cols[1:], opts["methods"]):
            col.markdown(f"**{method}**")
            ex = _explain(col, rkey, picked, method, opts["target"], opts, rm)
            if ex is None:
                continue
            show_map(picked.pixels, ex["heatmap"], opts, col, method)
            scores = _scores(ex)
            _score_caption(col, ex, scores)
            curves[method] = ex["curve"]
            rows.append(_row(method, scores, ex, None))
        for method in opts["methods"]:
            ex = _cached(rkey, picked, method, opts["target"], opts, rm)
            if ex is not None:
                _warn_coarse(ex, rm, warned)
    if curves:
        st.dataframe(
            rows,
            hide_index=True,
            key=f"{key}.table",
            column_config={c: st.column_config.TextColumn(help=h) for c, h in helps().items()},
        )
        what = str(classes[opts["target"]]) if not side_by_side else "each label"
        st.plotly_chart(charts.deletion_curves(curves, what), key=f"{key}.chart.deletion")
        st.caption(
            "Faithfulness: pixels are removed most-important first (replaced by the baseline) and the target's "
            "probability is re-measured. A map that finds what the model really uses makes the probability fall "
            "fast: a lower area under the curve is better. Compare methods on the same image and target."
        )
    return opts


def _cached(rkey: tuple, picked, method: str, target: int, opts: dict, rm) -> dict | None:
    try:
        return explanation(rkey, picked.key, method, target, opts["baseline"], rm, picked.x)
    except (LoupeError, ValueError, RuntimeError):
        return None


def _explain(col, rkey: tuple, picked, method: str, target: int, opts: dict, rm) -> dict | None:
    try:
        with st.spinner(f"Computing {method}…"):
            return explanation(rkey, picked.key, method, target, opts["baseline"], rm, picked.x)
    except (LoupeError, ValueError, RuntimeError) as e:
        col.error(f"{method}: {e}", icon=":material/error:")
        return None


def _warn_coarse(ex: dict, rm, warned: set) -> None:
    """One warning per map size (under the maps, full width), however many labels or methods read it."""
    note = coarse_note(ex, rm)
    if note and note not in warned:
        warned.add(note)
        st.warning(note, icon=":material/grid_view:")


def _row(method: str, scores: dict[str, str], ex: dict, label: str | None) -> dict:
    row = {"method": method}
    if label is not None:
        row["label"] = label
    return {
        **row,
        "deletion AUC (lower is better)": scores["Deletion AUC"],
        "infidelity": scores["infidelity"],
        "max-sensitivity": scores["max-sensitivity"],
        "time": f"{ex['seconds'] * 1000:,.0f} ms",
    }
