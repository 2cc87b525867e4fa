"""Former home of the BadNet, Blend, SIG and Polygon triggers and their factory.

The triggers now live one family per module (:mod:`~medic_viz.attacks.base`,
:mod:`~medic_viz.attacks.patch`, :mod:`~medic_viz.attacks.blend`,
:mod:`~medic_viz.attacks.sig`, :mod:`~medic_viz.attacks.polygon`) and the factory is the
one registry of all ten attacks (:mod:`~medic_viz.attacks.registry`); this module
re-exports their names.
"""

from medic_viz.attacks.base import Trigger
from medic_viz.attacks.blend import BlendTrigger
from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.attacks.polygon import PolygonTrigger
from medic_viz.attacks.registry import AVAILABLE_TRIGGERS, make_trigger, trigger_from_config
from medic_viz.attacks.sig import SIGTrigger

__all__ = [
    "AVAILABLE_TRIGGERS",
    "Trigger",
    "BadNetTrigger",
    "BlendTrigger",
    "SIGTrigger",
    "PolygonTrigger",
    "make_trigger",
    "trigger_from_config",
]
