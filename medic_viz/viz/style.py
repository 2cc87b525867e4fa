"""Shared look of every figure and widget: one colour per series, in this order."""

from __future__ import annotations

__all__ = ["PALETTE"]

#: Series colours (plotly/matplotlib "tab10" order without the greys): run ``i`` of a launcher, method
#: ``i`` of a comparison and curve ``i`` of a sweep all get ``PALETTE[i % len(PALETTE)]``.
PALETTE: tuple[str, ...] = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
