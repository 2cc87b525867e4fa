"""The development / evaluation protocol of the experiments: choose on development data,
report on evaluation data.

Two things are split, each by a rule written here once:

* **Teachers.** A trojaned model's card records its role (:attr:`ModelCard.role
  <medic_viz.cards.ModelCard.role>`): ``"development"`` models are the ones settings (defaults,
  thresholds, learning rates) may be chosen on; ``"evaluation"`` models are trained the same
  way from another seed, and results are reported on them. The GTSRB presets give the role by
  training seed (:data:`ROLE_SEEDS`).
* **Test images.** A dataset's test set is split into two disjoint, class-stratified parts
  (:func:`part_of_test_set`): the ``"development"`` part is what choosing may look at, the
  ``"evaluation"`` part is what a reported number is measured on. The split is a fixed
  function of the labels and :data:`SPLIT_SEED`, so every run, process and machine gets the
  same images.

A grid runs on one part with ``CellSpec.test_part`` (``medic-viz compare --test-part``);
:func:`check_role` refuses a model whose card says it is for the other use.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from medic_viz.cards import TEACHER_ROLES
from medic_viz.data.arrays import DatasetSplits

__all__ = ["ROLES", "DEVELOPMENT", "EVALUATION", "ROLE_SEEDS", "SPLIT_SEED", "DEV_FRACTION", "role_of_seed", "check_role_seed",
           "part_of_test_set", "splits_part", "check_role", "card_role"]

#: The roles of a model or a part of the test set.
ROLES = TEACHER_ROLES
DEVELOPMENT, EVALUATION = ROLES
#: Training seeds of the preset teachers per role: seed 0 chose the defaults (development),
#: seed 1 is reported on (evaluation); seed 2 is a second evaluation set, kept fresh for a
#: setting that passed its development rule (BENCHMARKS.md §6, rule 6). The first seed of a
#: role is the one a grid uses unless told otherwise.
ROLE_SEEDS: Mapping[str, tuple[int, ...]] = {DEVELOPMENT: (0,), EVALUATION: (1, 2)}
#: The seed of the test-set split (a constant: changing it changes which images are evaluation).
SPLIT_SEED = 2718
#: Share of each class's test images in the development part.
DEV_FRACTION = 0.5


def role_of_seed(seed: int) -> str | None:
    """The role of a preset teacher trained with ``seed`` (:data:`ROLE_SEEDS`), None if neither."""
    return next((role for role, seeds in ROLE_SEEDS.items() if int(seed) in seeds), None)


def check_role_seed(role: str, seed: int) -> int:
    """``seed`` if it is one of ``role``'s training seeds (:data:`ROLE_SEEDS`), else ValueError
    naming the seeds to use."""
    if int(seed) not in ROLE_SEEDS[_check_part(role)]:
        article = "an" if role == EVALUATION else "a"
        raise ValueError(f"seed {seed} is not {article} {role} seed: use one of {', '.join(map(str, ROLE_SEEDS[role]))}")
    return int(seed)


def _check_part(part: str) -> str:
    if part not in ROLES:
        raise ValueError(f"test part must be one of {', '.join(ROLES)}, got {part!r}")
    return part


def part_of_test_set(data: Any, part: str, *, dev_fraction: float = DEV_FRACTION, seed: int = SPLIT_SEED) -> Any:
    """The ``part`` (``"development"`` or ``"evaluation"``) of a test set ``data``
    (:class:`~medic_viz.data.arrays.ImageArrays`): per class, a fixed random
    ``round(dev_fraction · n_class)`` of its images are development, the rest evaluation (a class
    with one image goes to evaluation). The two parts are disjoint and together are ``data``."""
    _check_part(part)
    if not 0.0 < float(dev_fraction) < 1.0:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction!r}")
    g = torch.Generator().manual_seed(int(seed))
    labels = data.labels
    chosen = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        order = members[torch.randperm(len(members), generator=g)]
        n_dev = int(round(float(dev_fraction) * len(members))) if len(members) > 1 else 0
        chosen.append(order[:n_dev] if part == DEVELOPMENT else order[n_dev:])
    indices = torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)
    out = data.subset(indices)
    out.name = f"{data.name}[{part}]"
    return out


def splits_part(splits: Any, part: str | None) -> Any:
    """``splits`` (:class:`~medic_viz.data.arrays.DatasetSplits`) with its test set replaced by
    its ``part`` (None: unchanged). The training set is untouched: a defence's clean data is
    drawn from it, never from the test set."""
    if part is None:
        return splits
    return DatasetSplits(splits.train, part_of_test_set(splits.test, part))


def card_role(card: Any) -> str | None:
    """The role a model card (a :class:`~medic_viz.cards.ModelCard` or its dict) records."""
    role = card.get("role") if isinstance(card, Mapping) else getattr(card, "role", None)
    return role if role in ROLES else None


def check_role(card: Any, wanted: str, what: str = "model") -> None:
    """Refuse ``card`` where it records a role other than ``wanted``: a development model in an
    evaluation, or an evaluation model where settings are being chosen. A card without a role
    passes (it is not part of a protocol)."""
    _check_part(wanted)
    role = card_role(card)
    if role is not None and role != wanted:
        use = "results are reported on" if role == EVALUATION else "settings were chosen on"
        article = "an" if role == EVALUATION else "a"
        raise ValueError(f"{what} is {article} {role} model ({use} it), not a {wanted} one: "
                         f"use a model whose card says role {wanted!r}")
