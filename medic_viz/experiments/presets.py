"""Named attack settings of the experiments: the GTSRB teachers behind RESULTS.md and
BENCHMARKS.md (target class, trigger options and poison rate per attack, teacher epochs per
architecture) and the surrogates of the Clean-Label attack. One definition, read by the
benchmarks and by anyone repeating them with :class:`~medic_viz.experiments.teachers.TeacherCache`.

:func:`gtsrb_recipe` turns a preset into the :class:`~medic_viz.experiments.teachers.TeacherRecipe`
of its teacher; :func:`clean_recipe` and :func:`surrogate_recipe` give the clean and the
adversarially trained models the Clean-Label attack perturbs its poisons against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from medic_viz.experiments.protocol import role_of_seed
from medic_viz.experiments.teachers import TeacherRecipe

__all__ = ["AttackPreset", "GTSRB_TARGET", "GTSRB_ATTACKS", "GTSRB_TEACHER_EPOCHS", "GTSRB_TABLE1_ATTACKS",
           "CLEAN_LABEL_SURROGATES", "gtsrb_recipe", "clean_recipe", "surrogate_recipe"]


@dataclass(frozen=True)
class AttackPreset:
    """An attack's settings in a preset: trigger ``options`` for the registry, the poison
    ``rate`` (None = the registry's default rate) and, for the Clean-Label attack, the name of
    the surrogate (in :data:`CLEAN_LABEL_SURROGATES`) its PGD runs against."""

    options: Mapping[str, Any] = field(default_factory=dict)
    rate: float | None = None
    surrogate: str | None = None
    #: The rate a card written before the rate check recorded for the same poisoning (it asked
    #: for more than the pool and was silently capped to it), so that teacher is still found.
    recorded_rate: float | None = None


#: GTSRB "speed limit 30", one of the largest classes (2,220 training images): the target of
#: every GTSRB teacher.
GTSRB_TARGET = 1
#: GTSRB's training images, and those of the target class (the Clean-Label preset poisons all of them).
GTSRB_TRAIN_IMAGES, GTSRB_TARGET_TRAIN_IMAGES = 39209, 2220

#: Epochs of a GTSRB teacher, by architecture (Adam 2e-3, cosine: ``ATTACK_TRAIN_DEFAULTS``).
#: The other architectures of issue 27 (the paper's Figure 8) train as long as WRN-16-1.
GTSRB_TEACHER_EPOCHS: Mapping[str, int] = MappingProxyType(
    {"small_cnn": 15, "wrn16_1": 30, "resnet18": 30, "vgg11_bn": 30, "mobilenet_v1": 30})

#: Trigger settings of the GTSRB teachers, per attack.
GTSRB_ATTACKS: Mapping[str, AttackPreset] = MappingProxyType({
    "badnet": AttackPreset({"size": 3}, 0.1),
    "blend": AttackPreset({"pattern": "noise", "alpha": 0.15, "seed": 0}, 0.1),
    "sig": AttackPreset({"delta": 0.2, "frequency": 6}, 0.056),  # clean-label: about all of class 1
    "polygon": AttackPreset({}, None),
    # WaNet's defaults (k = 4, s = 0.5, noise mode ×2) gave a 15-epoch small_cnn teacher only
    # 22 % ASR (90.4 % accuracy): not a backdoor. A stronger warp without noise mode, as a
    # removal benchmark needs a working backdoor.
    "wanet": AttackPreset({"k": 4, "s": 1.0, "cross_ratio": 0.0}, 0.1),
    # Clean-Label: every class-1 image (rate above its 5.7 % share) perturbed by PGD ε 16/255
    # against a WRN-16-1 adversarially trained at ε 4/255 (as Turner et al., whose poisons come
    # from a robust model of the victim's architecture), then four 3x3 checkerboard patches 5
    # pixels in from the corners. In the corners themselves (margin 0) the patches never took on
    # a WRN-16-1 teacher (0.08–1.3 % ASR): training crops pad with 4 black pixels, so the border
    # is often padding and the teacher learns to ignore it; 5 pixels in, the same poisons gave
    # 80 % ASR after 8 epochs (benchmarks/results/cleanlabel_probe.md).
    # Every target-class image is poisoned (2,220 of 39,209: rate 5.66 %). The seed-0 teacher asked
    # for 0.06 before the rate check and was capped to the same 2,220 images; its card says 0.06.
    "cleanlabel": AttackPreset({"pgd_eps": 16 / 255, "margin": 5}, GTSRB_TARGET_TRAIN_IMAGES / GTSRB_TRAIN_IMAGES,
                               surrogate="robust4-wrn", recorded_rate=0.06),
    # Composite, Reflection, Filter: the registry's defaults (two classes chosen for the data; a
    # ghost reflection; "nashville").
    "composite": AttackPreset({}, None),
    "reflection": AttackPreset({}, None),
    "filter": AttackPreset({}, None),
})

#: The attacks of the GTSRB Table 1 (the paper's seven plus WaNet), in the paper's order.
GTSRB_TABLE1_ATTACKS = ("cleanlabel", "sig", "badnet", "composite", "reflection", "polygon", "filter", "wanet")

_ROBUST = {"architecture": "small_cnn", "eps": 8 / 255, "steps": 5, "step_size": 2 / 255, "epochs": 6}
#: Adversarially trained surrogates of the Clean-Label attack (PGD adversarial training, seed 2):
#: "robust-small" (ε 8/255; clean accuracy 47.7 % on GTSRB, where ε 8 is hard for small_cnn),
#: "robust4-small" (ε 4/255, more accurate), "robust4-wrn" (a WRN-16-1 at ε 4/255, the
#: architecture of the Table-1 teachers).
CLEAN_LABEL_SURROGATES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "robust-small": MappingProxyType(_ROBUST),
    "robust4-small": MappingProxyType({**_ROBUST, "eps": 4 / 255, "step_size": 1 / 255}),
    "robust4-wrn": MappingProxyType({"architecture": "wrn16_1", "eps": 4 / 255, "steps": 2, "step_size": 2 / 255,
                                     "epochs": 6}),
})
#: Seeds of the presets' models: teachers 0, the clean surrogate 1 (not any teacher's
#: initialisation), adversarial surrogates 2.
TEACHER_SEED, CLEAN_SEED, SURROGATE_SEED = 0, 1, 2


def surrogate_recipe(name: str, dataset: str | Path) -> TeacherRecipe:
    """The adversarially trained surrogate ``name`` of :data:`CLEAN_LABEL_SURROGATES` on ``dataset``."""
    if name not in CLEAN_LABEL_SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}: one of {', '.join(CLEAN_LABEL_SURROGATES)}")
    s = dict(CLEAN_LABEL_SURROGATES[name])
    return TeacherRecipe(dataset=str(dataset), architecture=s.pop("architecture"), epochs=s.pop("epochs"),
                         seed=SURROGATE_SEED, adversarial=s)


def clean_recipe(architecture: str, dataset: str | Path, epochs: int) -> TeacherRecipe:
    """A clean model (no attack, seed :data:`CLEAN_SEED`) on ``dataset``: the Clean-Label
    attack's standard surrogate."""
    return TeacherRecipe(dataset=str(dataset), architecture=architecture, epochs=int(epochs), seed=CLEAN_SEED)


def gtsrb_recipe(attack: str, architecture: str, dataset: str | Path, *, epochs: int | None = None,
                 seed: int = TEACHER_SEED) -> TeacherRecipe:
    """The GTSRB teacher of ``attack`` (its :data:`GTSRB_ATTACKS` preset, target
    :data:`GTSRB_TARGET`) for ``architecture``, trained ``epochs`` (default
    :data:`GTSRB_TEACHER_EPOCHS`) on ``dataset`` (the path of the GTSRB arrays). Its card's
    role is the seed's (:func:`medic_viz.experiments.protocol.role_of_seed`: 0 development,
    1 evaluation)."""
    if attack not in GTSRB_ATTACKS:
        raise ValueError(f"no GTSRB preset for attack {attack!r}: one of {', '.join(GTSRB_ATTACKS)}")
    if epochs is None and architecture not in GTSRB_TEACHER_EPOCHS:
        raise ValueError(f"no GTSRB teacher epochs for {architecture!r}: give epochs= "
                         f"(presets: {', '.join(GTSRB_TEACHER_EPOCHS)})")
    preset = GTSRB_ATTACKS[attack]
    return TeacherRecipe(dataset=str(dataset), architecture=architecture,
                         epochs=int(GTSRB_TEACHER_EPOCHS[architecture] if epochs is None else epochs), seed=seed,
                         attack=attack, options=dict(preset.options), rate=preset.rate, target=GTSRB_TARGET,
                         surrogate=None if preset.surrogate is None else surrogate_recipe(preset.surrogate, dataset),
                         role=role_of_seed(seed), recorded_rate=preset.recorded_rate)
