"""What every chart of the app shares (no Streamlit here): the palette and `layout()`, the title, height and
margins of a figure. Each page's figures live in its own package (`app/<page>/charts.py`)."""

from __future__ import annotations

import plotly.graph_objects as go

# Vega's Tableau 10, the palette of every chart (BLUE is also the theme's primaryColor in .streamlit/config.toml)
BLUE, ORANGE, RED, TEAL, GREEN = "#4C78A8", "#F58518", "#E45756", "#72B7B2", "#54A24B"
YELLOW, PURPLE, BROWN, GREY = "#EECA3B", "#B279A2", "#9D755D", "#BAB0AC"
PALETTE = [BLUE, ORANGE, GREEN, RED, PURPLE, TEAL, YELLOW, BROWN, GREY]  # for series without a colour of their own
HEIGHT = 360  # px, unless a page's charts choose otherwise


def layout(fig: go.Figure, title: str, height: int = HEIGHT, **kw) -> go.Figure:
    """`fig` with the app's title style (top left), `height` and tight margins; `kw` go to `update_layout`."""
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        height=height,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        **kw,
    )
    return fig
