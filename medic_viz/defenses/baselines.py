"""Deprecated: the former import path of the baseline defences.

The methods live one per module — :mod:`~medic_viz.defenses.finetune`,
:mod:`~medic_viz.defenses.fineprune`, :mod:`~medic_viz.defenses.nad`,
:mod:`~medic_viz.defenses.mcr`, :mod:`~medic_viz.defenses.anp`,
:mod:`~medic_viz.defenses.distill` (KD and scratch training) — on the shared base in
:mod:`~medic_viz.defenses.base`, and the registry (``DEFENSES``, ``make_defense`` …) in
:mod:`~medic_viz.defenses.registry`. The old names still resolve here, with a
DeprecationWarning naming the new path (:mod:`medic_viz.deprecation`).
"""

from medic_viz.deprecation import MOVED, moved_names

__all__ = [name for name in MOVED[__name__] if not name.startswith("_")]
__getattr__ = moved_names(__name__)
