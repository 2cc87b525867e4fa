"""Old import paths: the one table of names that moved, and the module ``__getattr__`` that keeps
them working.

Each entry of :data:`MOVED` maps a shim module to the names it still answers and where each
one lives now (``"module"`` for the same name, ``"module:name"`` for a renamed one). A shim
module holds no import of the canonical modules: it sets ``__getattr__ = moved_names(__name__)``,
so the old path imports the new home only when the old name is looked up, and each look-up
warns (``DeprecationWarning`` naming the new path; Python's default filter shows it once per
place that uses the old name). Nothing in the repository uses these
paths (``tests/test_import_graph.py`` fails if something does).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable

__all__ = ["MOVED", "canonical_path", "moved_names"]

_TRIGGERS = {
    "AVAILABLE_TRIGGERS": "medic_viz.pretrained:DEMO_ATTACKS",
    "Trigger": "medic_viz.attacks.base",
    "BadNetTrigger": "medic_viz.attacks.patch",
    "BlendTrigger": "medic_viz.attacks.blend",
    "SIGTrigger": "medic_viz.attacks.sig",
    "PolygonTrigger": "medic_viz.attacks.polygon",
    "make_trigger": "medic_viz.attacks.registry",
    "trigger_from_config": "medic_viz.attacks.registry",
}

_ADVANCED = {
    "CleanLabelTrigger": "medic_viz.attacks.clean_label",
    "pgd_perturb": "medic_viz.attacks.clean_label",
    "poison_clean_label": "medic_viz.attacks.clean_label",
    "ReflectionTrigger": "medic_viz.attacks.reflection",
    "FilterTrigger": "medic_viz.attacks.filter",
    "INSTAGRAM_FILTERS": "medic_viz.attacks.filter",
    "WaNetTrigger": "medic_viz.attacks.wanet",
    "WaNetPoisonedData": "medic_viz.attacks.wanet",
    "poison_wanet": "medic_viz.attacks.wanet",
    "CompositeAttack": "medic_viz.attacks.composite",
    "CompositeEvaluator": "medic_viz.attacks.composite",
    "CompositePoisonedData": "medic_viz.attacks.composite",
    "poison_composite": "medic_viz.attacks.composite",
    "AdaptiveObjective": "medic_viz.attacks.adaptive",
    "train_on_poisoned": "medic_viz.attacks.train",
    "train_adaptive_trojaned_model": "medic_viz.attacks.train",
    "train_attack": "medic_viz.attacks.train",
    "attack_evaluator": "medic_viz.attacks.registry",
    "build_attack": "medic_viz.attacks.registry",
    "default_rate": "medic_viz.attacks.registry",
    "make_any_trigger": "medic_viz.attacks.registry",
    "any_trigger_from_config": "medic_viz.attacks.registry",
    "ADVANCED_TRIGGERS": "medic_viz.attacks.registry",
    "ALL_TRIGGERS": "medic_viz.attacks.registry",
    "ATTACKS": "medic_viz.attacks.registry",
    "PAPER_ATTACKS": "medic_viz.attacks.registry",
}

_BASELINES = {
    **{name: "medic_viz.defenses.finetune" for name in ("FineTuningConfig", "FineTuning")},
    **{name: "medic_viz.defenses.fineprune" for name in ("FinePruningConfig", "FinePruning", "prune_channels",
                                                          "last_conv_block")},
    **{name: "medic_viz.defenses.nad" for name in ("NADConfig", "NAD", "AttentionDistillationObjective",
                                                    "attention_map", "attention_layers")},
    **{name: "medic_viz.defenses.mcr" for name in ("MCRConfig", "MCR", "BezierCurve", "CurveObjective", "update_bn",
                                                    "choose_t")},
    **{name: "medic_viz.defenses.anp" for name in ("ANPConfig", "ANP", "ANPObjective", "prune_by_masks",
                                                    "_MaskedNetwork")},
    **{name: "medic_viz.defenses.distill" for name in ("KDConfig", "KnowledgeDistillation", "ScratchConfig",
                                                        "ScratchTraining", "DistillationObjective")},
    **{name: "medic_viz.defenses.registry" for name in ("DEFENSES", "DISPLAY_NAMES", "available_defenses",
                                                         "defense_class", "make_defense")},
    "_canonical": "medic_viz.defenses.registry:canonical_name",
}

_FIGURES = {
    **{name: "medic_viz.viz.analysis_figures" for name in ("FIGURE2_COLUMNS", "attribution_figure", "figure2_grid",
                                                            "layer_strip", "neuron_ranking_figure",
                                                            "top_activating_figure")},
    "export_figure": "medic_viz.viz.export",
    **{name: "medic_viz.viz.summary_figures" for name in ("aggregate_rows", "defense_comparison_figure",
                                                           "lambda_tau_figure", "tau_sweep_figure",
                                                           "tradeoff_figure")},
}

#: Shim module → {old name: where it lives now, ``"module"`` or ``"module:new_name"``}.
MOVED: dict[str, dict[str, str]] = {
    "medic_viz.attacks.triggers": _TRIGGERS,
    "medic_viz.attacks.advanced": _ADVANCED,
    "medic_viz.defenses.baselines": _BASELINES,
    "medic_viz.viz.figures": _FIGURES,
    "medic_viz.attacks.poison": {name: "medic_viz.attacks.train"
                                 for name in ("ATTACK_TRAIN_DEFAULTS", "TrojanedModel", "train_trojaned_model")},
    "medic_viz.attacks": {"AVAILABLE_TRIGGERS": "medic_viz.pretrained:DEMO_ATTACKS"},
    "medic_viz.attacks.registry": {"AVAILABLE_TRIGGERS": "medic_viz.pretrained:DEMO_ATTACKS"},
    "medic_viz.metrics": {"resolve_device": "medic_viz.device"},
    "medic_viz.pipeline": {"format_table": "medic_viz.metrics:format_before_after",
                           # a view: result.json + model/ are pipeline.save_outcome, report.html is drawn
                           "write_outputs": "medic_viz.viz.report"},
    "medic_viz.defenses.registry": {"_canonical": "medic_viz.defenses.registry:canonical_name"},
    "medic_viz.outdir": {"command_inputs": "medic_viz.inputs"},
    "medic_viz.experiments.folders": {"folder_teacher": "medic_viz.experiments.cells"},
    # the MEDIC engine and the defences package re-exported the statistics pass and the weighted error
    "medic_viz.defenses": {"compute_layer_stats": "medic_viz.stats"},
    "medic_viz.defenses.medic": {"weighted_squared_error": "medic_viz.importance",
                                 "compute_layer_stats": "medic_viz.stats"},
    # io.py is the model folder; the card, safe reading of weights files, fitting weights and
    # importing a checkpoint have a module each
    "medic_viz.io": {"ModelCard": "medic_viz.cards",
                     "UnsafeCheckpointError": "medic_viz.checkpoints",
                     "load_state_dict_file": "medic_viz.checkpoints",
                     "CheckpointMismatchError": "medic_viz.weights",
                     "load_weights_into": "medic_viz.weights",
                     "import_checkpoint": "medic_viz.importer"},
}

def canonical_path(shim: str, name: str) -> tuple[str, str]:
    """``(module, name)`` where ``shim.name`` lives now; KeyError when it is not a moved name."""
    module, _, new = MOVED[shim][name].partition(":")
    return module, new or name


def moved_names(shim: str) -> Callable[[str], Any]:
    """The module ``__getattr__`` of the shim module ``shim``: a moved name is imported from its
    new home, with a ``DeprecationWarning`` naming it; any other name is an AttributeError."""

    def __getattr__(name: str) -> Any:
        if name not in MOVED[shim]:
            raise AttributeError(f"module {shim!r} has no attribute {name!r}")
        module, new = canonical_path(shim, name)
        warnings.warn(f"{shim}.{name} is deprecated; use {module}.{new}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), new)

    return __getattr__
