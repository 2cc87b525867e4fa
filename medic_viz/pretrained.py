"""Small trojaned demo models shipped inside the package (safetensors + JSON card each).

Each is the ``small_cnn`` trained on the embedded synthetic traffic signs (seed 0, 32×32)
with one attack, all-to-one onto the target class; ``"clean"`` is the same model trained
without poison, for comparison. They are made by ``scripts/make_demo_models.py``, which
anyone can rerun to get the same files.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from medic_viz.cards import ModelCard
from medic_viz.io import load_model

__all__ = ["DEMO_ATTACKS", "DEMO_MODELS", "DEMO_DIR", "demo_model_dir", "load_demo_model"]

#: Attacks with a shipped trojaned demo model.
DEMO_ATTACKS: tuple[str, ...] = ("badnet", "blend", "sig", "polygon")
#: Every shipped model: the trojaned ones and a clean reference.
DEMO_MODELS: tuple[str, ...] = (*DEMO_ATTACKS, "clean")
DEMO_DIR = Path(__file__).resolve().parent / "demo_models"


def demo_model_dir(name: str = "badnet") -> Path:
    """Folder of a shipped demo model (``model.safetensors`` + ``card.json``)."""
    key = str(name).strip().lower()
    if key not in DEMO_MODELS:
        raise ValueError(f"no demo model {name!r}; shipped demo models: {', '.join(DEMO_MODELS)}")
    path = DEMO_DIR / key
    if not (path / "card.json").is_file():
        raise FileNotFoundError(
            f"demo model {key!r} is missing from {path}; regenerate the demo models with "
            "`python scripts/make_demo_models.py` from the repository root"
        )
    return path


def load_demo_model(name: str = "badnet", *, device: str = "cpu") -> tuple[nn.Module, ModelCard]:
    """Load a shipped demo model and its card (eval mode). ``card.attack`` holds the trigger
    config (``medic_viz.trigger_from_config(card.attack)``), ``card.target_class`` the target."""
    return load_model(demo_model_dir(name), device=device)
