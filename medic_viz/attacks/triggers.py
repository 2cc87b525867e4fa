"""Deprecated: the former home of the BadNet, Blend, SIG and Polygon triggers and their factory.

The triggers live one family per module (:mod:`~medic_viz.attacks.base` holds the
:class:`Trigger` contract, :mod:`~medic_viz.attacks.patch`, :mod:`~medic_viz.attacks.blend`,
:mod:`~medic_viz.attacks.sig`, :mod:`~medic_viz.attacks.polygon`) and the factory is the one
registry of all ten attacks (:mod:`~medic_viz.attacks.registry`). The old names still resolve
here, with a DeprecationWarning naming the new path (:mod:`medic_viz.deprecation`).
"""

from medic_viz.deprecation import MOVED, moved_names

__all__ = [name for name in MOVED[__name__] if not name.startswith("_")]
__getattr__ = moved_names(__name__)
