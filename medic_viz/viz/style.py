"""Shared look of every figure and widget: one colour per series, in this order."""

from __future__ import annotations

__all__ = ["PALETTE", "REFERENCE_COLOR", "REFERENCE_SERIES"]

#: Series colours (plotly/matplotlib "tab10" order without the greys): run ``i`` of a launcher, method
#: ``i`` of a comparison and curve ``i`` of a sweep all get ``PALETTE[i % len(PALETTE)]``.
PALETTE: tuple[str, ...] = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")

#: Colour of the reference series a comparison measures against (the trojaned model,
#: "Original"), outside :data:`PALETTE` so that no method shares it.
REFERENCE_COLOR = "#7f7f7f"
#: Series names drawn in :data:`REFERENCE_COLOR`.
REFERENCE_SERIES: tuple[str, ...] = ("Original",)
