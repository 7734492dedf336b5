"""The LR finder on the Train page: a range test on the form's current settings, plotted, with a
button that copies the suggested learning rate into the form."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app.train import values
from engine.errors import LoupeError

K_RESULT = "train.lrfind.result"
STEPS = 100


def _use(lr: float) -> None:
    values.set_field("lr", float(f"{lr:.3g}"))
    values.mark_edited("lr")


def chart(result: dict) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(
        x=result["lrs"],
        y=result["losses"],
        mode="lines",
        name="smoothed loss",
        hovertemplate="lr %{x:.2e} · loss %{y:.4f}<extra></extra>",
    )
    if result.get("suggested_lr"):
        fig.add_vline(
            x=result["suggested_lr"],
            line_dash="dash",
            line_color="#d62728",
            annotation_text=f"suggested {result['suggested_lr']:.2e}",
        )
    fig.update_xaxes(type="log", title="learning rate")
    fig.update_yaxes(title="training loss (smoothed)")
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10}, showlegend=False)
    return fig


def section() -> None:
    """Run the range test on demand; keep the last result until the next one."""
    st.caption(
        f"LR finder: {STEPS} training batches with the learning rate rising from 1e-6 to 1 on a throwaway "
        "copy of the model (nothing is saved); the suggestion is where the loss falls fastest."
    )
    if st.button("Find a learning rate", icon=":material/query_stats:", key="train.lrfind"):
        try:
            from engine.train.lr_find import find_lr

            cfg = values.build_config()
            bar = st.progress(0.0, text="LR range test")
            st.session_state[K_RESULT] = find_lr(
                cfg,
                num_steps=STEPS,
                progress=lambda done, total, stage: bar.progress(
                    min(1.0, done / max(total, 1)), text=f"{stage}: {done}/{total}"
                ),
            )
            bar.empty()
        except LoupeError as e:
            st.error(str(e), icon=":material/error:")
    result = st.session_state.get(K_RESULT)
    if result and result.get("lrs"):
        st.plotly_chart(chart(result), key="train.lrfind.chart")
        lr = result.get("suggested_lr")
        if lr:
            st.button(f"Use the suggested learning rate ({lr:.2e})", key="train.lrfind.use", on_click=_use, args=(lr,))
