"""Deprecated: the former home of the Clean-Label, Reflection, Filter, WaNet, Composite and
adaptive attacks.

They live one family per module (:mod:`~medic_viz.attacks.clean_label`,
:mod:`~medic_viz.attacks.reflection`, :mod:`~medic_viz.attacks.filter`,
:mod:`~medic_viz.attacks.wanet`, :mod:`~medic_viz.attacks.composite`,
:mod:`~medic_viz.attacks.adaptive`), with one registry (:mod:`~medic_viz.attacks.registry`)
and one trainer (:mod:`~medic_viz.attacks.train`). The old names still resolve here, with a
DeprecationWarning naming the new path (:mod:`medic_viz.deprecation`).
"""

from medic_viz.deprecation import MOVED, moved_names

__all__ = [name for name in MOVED[__name__] if not name.startswith("_")]
__getattr__ = moved_names(__name__)
