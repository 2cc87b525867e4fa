"""The plotly renderer for notebooks (interactive, optionally with a static PNG per figure)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["use_notebook_renderer"]


def use_notebook_renderer(png: bool = False) -> str:
    """Set plotly's default renderer for notebooks and return its name.

    ``"plotly_mimetype"``: interactive figures in JupyterLab/VS Code (small outputs, no plotly.js
    copied into the notebook). With ``png=True`` each figure also carries a static PNG in the
    same output, so a notebook committed with outputs reads on GitHub (which draws no
    JavaScript). PNGs need kaleido and a Chrome/Chromium (``/usr/bin/chromium`` is used when
    ``BROWSER_PATH`` is unset); where they cannot be made a warning says why and figures stay
    interactive only.
    """
    name = "plotly_mimetype"
    if png:
        if "BROWSER_PATH" not in os.environ:
            for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"):
                if Path(candidate).exists():
                    os.environ["BROWSER_PATH"] = candidate
                    break
        try:
            pio.to_image(go.Figure(), format="png", width=10, height=10)
            name = "plotly_mimetype+png"
            pio.renderers["png"].width = 1000  # figures without a width of their own (plotly's default: 700)
        except Exception as exc:  # noqa: BLE001 - any renderer failure means "no PNG here"
            warnings.warn(f"static PNGs are off ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''});"
                          " install kaleido and Chromium to embed them", RuntimeWarning, stacklevel=2)
    pio.renderers.default = name
    return name
