"""The adversarial and robustness panels of the Explain page (`engine.explain.attacks`).

Adversarial: one image, one epsilon, FGSM or PGD (optionally targeted): original, amplified perturbation and
adversarial image, each with its prediction, and whether the prediction flipped. Robustness: an epsilon sweep
over validation images (button-started, with a progress bar), drawn as accuracy (and HTER) vs epsilon,
per-class robust accuracy and the minimal-epsilon histogram. Epsilon is in pixel units (images in [0, 1])."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from app.common.images import THUMB_PX, for_display
from app.explain import charts, methods
from engine.data.pixels import to_uint8
from engine.errors import LoupeError

ATTACKS = {"fgsm": "FGSM (one step)", "pgd": "PGD (iterated)"}
EPS_MAX = 0.1
MIN_EPS_HI = 0.1  # epsilon_sweep searches the minimal epsilon up to this
DEFAULT_SWEEP = "0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05"


def probs_of(rm, x) -> np.ndarray:
    from engine.predict.run_model import predict_tensor

    return methods.as_array(predict_tensor(rm, x))[0]


def attack(rm, x, y: int, eps: float, method: str, targeted: bool, target: int | None, steps: int):
    """The adversarial tensor (1, C, H, W) for one image."""
    import torch

    from engine.explain import attacks as adv

    y_t = torch.tensor([int(y)], dtype=torch.long)
    t_t = torch.tensor([int(target)], dtype=torch.long) if targeted and target is not None else None
    if method == "pgd":
        return adv.pgd(rm, x, y_t, eps, steps=steps, targeted=targeted, target=t_t, seed=0)
    return adv.fgsm(rm, x, y_t, eps, targeted=targeted, target=t_t)


def perturbation(x, x_adv) -> tuple[np.ndarray, float | None]:
    """`perturbation_image` as (uint8 image, scale); the scale is None when the engine gives none."""
    from engine.explain.attacks import perturbation_image

    out = perturbation_image(x, x_adv)
    if isinstance(out, tuple):
        img, scale = out[0], out[1] if len(out) > 1 else None
        return np.asarray(img, dtype=np.uint8), (float(scale) if scale is not None else None)
    return np.asarray(out, dtype=np.uint8), None


def _caption(classes: Sequence[str], probs: np.ndarray, k: int) -> str:
    return f"{classes[k]} ({probs[k]:.1%})"


def amplification(scale: float | None) -> str:
    """How much the perturbation image is amplified, rounded for people: 49.9999 -> "×50", 2.5 -> "×2.5"."""
    if not scale or not np.isfinite(scale):
        return "amplified for visibility"
    return f"amplified ×{scale:.0f}" if scale >= 10 else f"amplified ×{scale:.2g}"


def adversarial_panel(
    run, rm, picked, classes: Sequence[str], opts: dict, key: str = "adv", scope: str = ""
) -> dict | None:
    """Draw the panel; returns what it computed (for tests and callers): probs, adversarial probs, flipped.
    Predictions are the run's decisions (a binary run's saved threshold, as Evaluate and Predict decide). The
    target selector's options leave out the predicted class, so they depend on the image: its key carries
    `scope` (`load.scope`), as the class selector of the attributions does."""
    from app.explain import load

    if rm.task == "multilabel":
        st.info("Attacks here target single-label predictions; this run is multi-label.", icon=":material/info:")
        return None
    rule = load.decision_rule(run, rm)
    clean = probs_of(rm, picked.x)
    predicted = load.decided(clean, rm.task, rule)
    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
    eps = c1.slider(
        "Epsilon (max change per pixel, 0–1 scale)",
        0.0,
        EPS_MAX,
        0.01,
        0.001,
        format="%.3f",
        key=f"{key}.eps",
        help="L∞ budget: no pixel moves by more than this. 1/255 ≈ 0.004 is one grey level.",
    )
    method = c2.radio("Attack", list(ATTACKS), format_func=ATTACKS.get, key=f"{key}.method")
    steps = c3.number_input("PGD steps", 1, 100, 10, key=f"{key}.steps", disabled=method != "pgd")
    targeted = c4.toggle(
        "Targeted", key=f"{key}.targeted", help="Push towards a chosen class instead of away from the true one."
    )
    target = None
    if targeted:
        others = [i for i in range(len(classes)) if i != predicted] or [predicted]
        tkey = f"{key}.target.{scope}" if scope else f"{key}.target"
        if st.session_state.get(tkey) is not None and st.session_state[tkey] not in others:
            st.session_state.pop(tkey)  # a class of another image (or run): start from this image's first option
        target = c4.selectbox("Towards", others, format_func=lambda i: classes[i], key=tkey)
    y = picked.label if picked.label is not None else predicted
    st.caption(
        f"Attacking the {'true class' if picked.label is not None else 'predicted class'} **{classes[y]}**"
        + (f", towards **{classes[target]}**" if targeted else "")
        + f" at ε = {eps:.3f} ({eps * 255:.1f}/255)."
    )
    try:
        with st.spinner("Attacking…"):
            x_adv = attack(rm, picked.x, y, eps, method, targeted, target, int(steps))
            adv_probs = probs_of(rm, x_adv)
            pert, scale = perturbation(picked.x, x_adv)
    except (LoupeError, ValueError, RuntimeError) as e:
        st.error(f"The attack failed: {e}", icon=":material/error:")
        return None
    adv_pred = load.decided(adv_probs, rm.task, rule)
    flipped = adv_pred != predicted
    cols = st.columns(3)
    w = THUMB_PX + 64
    cols[0].image(for_display(picked.pixels), caption=f"original: {_caption(classes, clean, predicted)}", width=w)
    max_change = float((x_adv - picked.x).abs().max()) if hasattr(x_adv, "abs") else eps
    cols[1].image(
        for_display(pert),
        caption=f"perturbation ({amplification(scale)}; max |δ| = {max_change:.4f}, {max_change * 255:.1f}/255)",
        width=w,
    )
    cols[2].image(
        for_display(to_uint8(x_adv)[0]), caption=f"adversarial: {_caption(classes, adv_probs, adv_pred)}", width=w
    )
    if flipped:
        hit = " (the target class)" if targeted and adv_pred == target else ""
        st.error(
            f"Prediction flipped: **{classes[predicted]}** → **{classes[adv_pred]}**{hit} at ε = {eps:.3f}.",
            icon=":material/swap_horiz:",
        )
    else:
        st.success(
            f"Prediction held: still **{classes[predicted]}** ({adv_probs[predicted]:.1%}, was {clean[predicted]:.1%}).",
            icon=":material/shield:",
        )
    if st.toggle("Compare attributions (clean vs adversarial)", key=f"{key}.explain") and opts.get("methods"):
        method0 = opts["methods"][0]
        rkey = methods.run_key(run)
        akey = f"{picked.key}:adv:{method}:{eps:.4f}:{int(targeted)}:{target}:{int(steps)}"
        left, right = st.columns(2)
        try:
            a = methods.explanation(rkey, picked.key, method0, opts["target"], opts["baseline"], rm, picked.x)
            b = methods.explanation(rkey, akey, method0, opts["target"], opts["baseline"], rm, x_adv)
        except (LoupeError, ValueError, RuntimeError) as e:
            st.error(f"{method0}: {e}", icon=":material/error:")
        else:
            methods.show_map(picked.pixels, a["heatmap"], opts, left, f"clean · {method0}")
            methods.show_map(to_uint8(x_adv)[0], b["heatmap"], opts, right, f"adversarial · {method0}")
            st.caption(f"Both explain **{classes[opts['target']]}** (the target chosen above).")
    return {"probs": clean, "adv_probs": adv_probs, "flipped": flipped, "x_adv": x_adv}


# --- robustness ---------------------------------------------------------------------------------------


def parse_eps(text: str) -> list[float]:
    vals = sorted({round(float(v), 6) for v in text.replace(";", ",").split(",") if v.strip()})
    if not vals or any(v < 0 or v > 1 for v in vals):
        raise ValueError("Epsilons must be numbers between 0 and 1, separated by commas.")
    return vals if vals[0] == 0 else [0.0, *vals]


def _seed_settings(run, key: str) -> None:
    """A fresh session (a reload, another tab) starts from the settings of the run's latest saved sweep, so the
    page comes back as it was left; otherwise from the defaults. Widgets get their values only through
    session state here (never also a `value=`), which Streamlit requires."""
    from engine.runs.sweeps import latest_record

    names = [f"{key}.{n}" for n in ("eps", "limit", "method", "steps")]
    if all(n in st.session_state for n in names):
        return
    rec = latest_record(run)
    p = rec["params"] if rec else {}
    values = {
        "eps": ", ".join(f"{e:g}" for e in p["eps"]) if p.get("eps") else DEFAULT_SWEEP,
        "limit": int(p.get("limit") or 200),
        "method": p.get("attack") if p.get("attack") in ATTACKS else "fgsm",
        "steps": int(p.get("steps") or 10) if p.get("attack") == "pgd" else 10,
    }
    for n, v in values.items():
        st.session_state.setdefault(f"{key}.{n}", v)


def _settings(p: dict) -> str:
    eps = ", ".join(f"{e:g}" for e in p.get("eps", []))
    steps = f", {p.get('steps')} steps" if p.get("attack") == "pgd" else ""
    return f"ε = {eps}; {p.get('limit')} {p.get('split', 'val')} images; {ATTACKS.get(p.get('attack'), p.get('attack'))}{steps}"


def _run_sweep(run, eps: list[float], limit: int, method: str, steps: int, params: dict, store: str) -> bool:
    """Run the sweep with a progress bar and save it in the run folder; False (with an error shown) if it failed.
    A reload or a widget change mid-sweep stops this script run, so nothing half-done is ever saved."""
    from engine.explain.attacks import epsilon_sweep
    from engine.runs.sweeps import jsonable, save_sweep

    bar = st.progress(0.0, text="Attacking…")

    def progress(done, total, *rest) -> None:
        frac = min(1.0, done / total) if total else 1.0
        bar.progress(frac, text=f"{(str(rest[0]) if rest else 'Attacking').capitalize()}: {done:,} of {total:,}")

    try:
        result = epsilon_sweep(
            run,
            eps,
            split="val",
            limit=limit,
            attack=method,
            steps=steps,
            progress=progress,
            seed=int(params.get("seed", 0)),
        )
    except (LoupeError, ValueError, RuntimeError) as e:
        bar.empty()
        st.error(f"The sweep failed: {e}", icon=":material/error:")
        return False
    bar.empty()
    result = jsonable(dict(result))
    st.session_state[store] = {"run": str(run.path), "params": params, "sweep": result}  # if the disk refuses
    try:
        save_sweep(run, params, result)
    except (LoupeError, OSError) as e:
        st.warning(
            f"The sweep could not be saved in the run folder ({e}); it is shown for this session only.",
            icon=":material/warning:",
        )
    return True


def _shown(run, params: dict, store: str) -> tuple[dict, str | None, bool] | None:
    """The sweep to draw, a note about it and whether the note is a warning (a sweep saved by an older Loupe):
    the one saved for these settings, else the run's latest saved one (its settings in the note), else this
    session's unsaved one; None when the run has none."""
    from engine.runs.sweeps import is_stale, latest_record, load_record, outdated

    rec, note = load_record(run, params), None
    if rec is None:
        rec = latest_record(run)
        if rec is not None:
            note = f"Showing the latest saved sweep ({_settings(rec['params'])}); the settings above differ. Run it again to update."
    if rec is not None:
        why = outdated(rec)
        if why:
            note = ((note + " ") if note else "") + why
        if is_stale(run, rec):
            note = (
                (note + " ") if note else ""
            ) + "The run's weights changed since this sweep was saved; run it again to measure them."
        return rec["result"], note, why is not None
    saved = st.session_state.get(store)
    if saved and saved.get("run") == str(run.path):
        same = saved["params"] == params
        return (
            saved["sweep"],
            None if same else "Showing the last sweep; the settings above changed since. Run it again to update.",
            False,
        )
    return None


def robustness_panel(run, rm, classes: Sequence[str], key: str = "rob") -> dict | None:
    """The sweep's settings, its button and its charts. Finished sweeps live in `RUN/robustness/`
    (`engine.runs.sweeps`), so a reload, another tab or a later visit shows them again."""
    from engine.runs.sweeps import sweep_params

    if rm.task == "multilabel":
        st.info("The robustness sweep needs a single-label run; this one is multi-label.", icon=":material/info:")
        return None
    _seed_settings(run, key)
    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
    text = c1.text_input("Epsilons", key=f"{key}.eps", help="Comma-separated, pixel units; 0 is always included.")
    limit = c2.number_input("Validation images", 10, 5000, step=10, key=f"{key}.limit")
    method = c3.radio("Attack", list(ATTACKS), format_func=ATTACKS.get, key=f"{key}.method")
    steps = c4.number_input("PGD steps", 1, 100, key=f"{key}.steps", disabled=method != "pgd")
    try:
        eps = parse_eps(text)
    except ValueError as e:
        st.error(str(e), icon=":material/error:")
        return None
    params = sweep_params(eps, "val", int(limit), method, int(steps))
    store = f"{key}.result"
    if st.button("Run the sweep", key=f"{key}.go", icon=":material/play_arrow:", type="primary"):
        if not _run_sweep(run, eps, int(limit), method, int(steps), params, store):
            return None
    shown = _shown(run, params, store)
    if shown is None:
        st.caption(
            "Attacks up to `limit` validation images at each epsilon and measures how accuracy falls. A few "
            "hundred images with FGSM take seconds on a small model; PGD costs `steps` times more. Finished "
            "sweeps are saved with the run."
        )
        return None
    sweep, note, warn = shown
    if note and warn:
        st.warning(note, icon=":material/history:")
    elif note:
        st.caption(note)
    binary = rm.task == "binary" and sweep.get("hter") is not None
    st.plotly_chart(charts.accuracy_vs_eps(sweep, binary), key=f"{key}.chart.acc")
    st.dataframe(
        sweep_table(sweep, binary),
        hide_index=True,
        key=f"{key}.table",
        column_config={c: st.column_config.TextColumn(c, help=RATE_HELP.get(c)) for c in RATE_HELP},
    )
    left, right = st.columns(2)
    if sweep.get("per_class") is not None:
        left.plotly_chart(charts.per_class_heatmap(sweep, classes), key=f"{key}.chart.per_class")
    if sweep.get("min_eps") is not None:
        right.plotly_chart(charts.min_eps_histogram(sweep["min_eps"], MIN_EPS_HI), key=f"{key}.chart.min_eps")
        right.caption(charts.min_eps_note(sweep["min_eps"], MIN_EPS_HI))
    st.caption(
        f"{sample_text(sweep)}, {ATTACKS.get(sweep.get('attack'), 'attack')}. Accuracy at ε = 0 is the clean "
        "accuracy on these images. Minimal epsilon: per image, the smallest ε (searched by bisection up to "
        f"{MIN_EPS_HI:g}) that flips its prediction; images already wrong or never flipped are counted apart."
    )
    return sweep


RATE_HELP = {
    "FAR": "False accepts / negatives in the sample, at the run's decision threshold. n/a: no negatives in the sample.",
    "FRR": "False rejects / positives in the sample, at the run's decision threshold. n/a: no positives in the sample.",
    "HTER": "(FAR + FRR) / 2. n/a when FAR or FRR is.",
}


def sweep_table(sweep: dict, binary: bool) -> list[dict]:
    """One row per epsilon with the sweep's rates written the one way Loupe writes them ("n/a" when missing)."""
    from engine.metrics.display import format_metric

    rows = []
    for i, e in enumerate(sweep.get("eps") or []):
        row = {
            "ε": f"{float(e):g}",
            "ε in grey levels": f"{float(e) * 255:.1f}/255",
            "accuracy": format_metric("accuracy", _at(sweep.get("accuracy"), i)),
        }
        if binary:
            row.update({k.upper(): format_metric(k, _at(sweep.get(k), i)) for k in ("far", "frr", "hter")})
        rows.append(row)
    return rows


def _at(values, i: int):
    return values[i] if isinstance(values, (list, tuple)) and i < len(values) else None


def sample_text(sweep: dict) -> str:
    """Which images the sweep attacked, for people: "200 of 1,968 val images (176 negatives, 24 positives),
    drawn stratified by class with seed 0"; older sweeps say they took the first images."""
    n, split = sweep.get("n"), sweep.get("split", "val")
    of = f" of {int(sweep['split_size']):,}" if isinstance(sweep.get("split_size"), int) else ""
    head = f"{int(n):,}{of} {split} images" if isinstance(n, int) else f"the {split} images"
    counts = sweep.get("class_counts")
    if isinstance(counts, dict) and counts:
        head += " (" + ", ".join(f"{int(v):,} {c}" for c, v in counts.items()) + ")"
    if sweep.get("sample") == "stratified":
        return head + f", drawn stratified by class with seed {sweep.get('seed', 0)}"
    return head + ", the first ones of the split (an older sweep)"
