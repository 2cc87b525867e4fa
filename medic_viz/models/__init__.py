"""Model zoo by name, plus the small pretrained trojaned demo models shipped in the package."""

from medic_viz.models.zoo import Normalize, available_models, build_model, count_parameters

__all__ = ["available_models", "build_model", "count_parameters", "Normalize"]
