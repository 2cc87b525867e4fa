"""Writing a figure to disk: interactive HTML always, a static PNG where a renderer works."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import plotly.graph_objects as go

__all__ = ["export_figure"]


def export_figure(
    fig: go.Figure,
    path_without_suffix: str | Path,
    *,
    png: bool = True,
    scale: float = 1.0,
    include_plotlyjs: str | bool = "cdn",
) -> list[Path]:
    """Write ``<path>.html`` (always) and ``<path>.png`` (when kaleido can render), returning the
    paths written. ``include_plotlyjs="cdn"`` keeps the HTML small (it loads plotly.js from the
    CDN); pass ``True`` for a self-contained, offline file (~4.7 MB).

    PNG export uses kaleido, which needs a Chrome/Chromium: if ``BROWSER_PATH`` is unset and
    ``/usr/bin/chromium`` exists it is used; a failed render is tried once more (kaleido's browser
    fails now and then on a busy machine). Where no renderer works the PNG is skipped with a
    ``RuntimeWarning`` saying why.
    """
    if not isinstance(fig, go.Figure):
        raise TypeError(f"fig must be a plotly go.Figure, got {type(fig).__name__}")
    base = Path(path_without_suffix)
    if base.suffix in (".html", ".png"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    html = base.with_suffix(".html")
    fig.write_html(html, include_plotlyjs=include_plotlyjs, full_html=True)
    written = [html]
    if png:
        previous = os.environ.get("BROWSER_PATH")
        if previous is None:
            for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"):
                if Path(candidate).exists():
                    os.environ["BROWSER_PATH"] = candidate
                    break
        try:
            try:
                data = fig.to_image(format="png", scale=scale)
            except Exception:  # noqa: BLE001 - kaleido's browser fails now and then on a busy machine: once more
                data = fig.to_image(format="png", scale=scale)
            out = base.with_suffix(".png")
            out.write_bytes(data)
            written.append(out)
        except Exception as exc:  # noqa: BLE001 - any renderer failure means "no PNG here"
            warnings.warn(
                f"PNG export of {base.name} skipped "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                "install kaleido and a Chrome/Chromium (e.g. `apt-get install chromium`, or `plotly_get_chrome`) to get PNGs",
                RuntimeWarning,
                stacklevel=2,
            )
        finally:
            if previous is None:
                os.environ.pop("BROWSER_PATH", None)
    return written
