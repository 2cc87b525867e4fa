"""Experiment grids: which cells an attacks × methods × seeds comparison (or one of the paper's
ablations) consists of, and each cell's identity.

A :class:`CellSpec` is everything one run depends on; its :attr:`CellSpec.cell_id` keys the
run in ``runs.jsonl`` (resume) and its :attr:`CellSpec.teacher_id` the trojaned teacher it
shares with other cells. :func:`build_grid` lists the cells; :func:`method_options` maps one
epoch budget onto each method's phases. Pure data: nothing here trains or plots.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from medic_viz.attacks.registry import ATTACKS, attack_spec, trigger_from_config
from medic_viz.attacks.train import ATTACK_TRAIN_DEFAULTS
from medic_viz.data.tracks import CLEAN_FROM
from medic_viz.data_identity import card_dataset, dataset_record
from medic_viz.defenses.registry import DEFENSES, DISPLAY_NAMES, MAIN_METHOD, canonical_name, defense_class, make_defense
from medic_viz.experiments.folders import file_sha256, read_teacher_folder
from medic_viz.experiments.protocol import ROLES
from medic_viz.importer import check_trusted_architecture, check_trusted_code
from medic_viz.models.zoo import available_models
from medic_viz.run_settings import RunSettings
from medic_viz.training import TrainConfig

__all__ = [
    "CellSpec",
    "ABLATIONS",
    "DEFAULT_ABLATION_VALUES",
    "TABLE1_METHODS",
    "ALL_METHODS",
    "build_grid",
    "method_options",
    "with_medic_defaults",
    "validate_cells",
]

ABLATIONS: tuple[str, ...] = ("none", "tau", "lambda_tau", "fraction", "criteria", "arch", "layers")

#: Values swept by each ablation when none are given (paper Figures 4, 6, 7, 8 and Table 4).
DEFAULT_ABLATION_VALUES: dict[str, dict[str, tuple]] = {
    "tau": {"tau": (0.0, 1.0, 2.0, 3.0, 5.0, 7.0)},
    "lambda_tau": {"lam": (1.0, 10.0, 100.0), "tau": (1.0, 3.0, 5.0, 7.0)},
    "fraction": {"fraction": (0.05, 0.1)},
    "criteria": {"criteria": ("activation", "impact", "both"), "tau": (1.0, 3.0, 5.0, 7.0)},
    "arch": {"arch": ("vgg11_bn", "mobilenet_v1", "wrn16_1"), "tau": (0.0, 1.0, 3.0, 5.0)},
    "layers": {"layers": ("conv+bn", "conv+bn+linear")},
}

#: The methods of the paper's Table 1, and every method the toolkit has.
TABLE1_METHODS: tuple[str, ...] = ("finetune", "fineprune", "nad", "mcr", "anp", "medic")
ALL_METHODS: tuple[str, ...] = tuple(DEFENSES)


def _digest(payload: Any, n: int = 12) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-.=" else "_" for ch in text)


@dataclass
class CellSpec:
    """One run of the grid: a defence ``method`` (with ``method_options``) on the model trojaned
    by ``attack`` (``attack_options``, ``target``, ``rate``) for ``seed``, or on the model in
    the folder ``teacher_dir`` (then ``attack`` is the folder's name, ``model``, ``target`` and
    ``dataset`` come from its card, and ``teacher_sha256``, the digest of its weights, with
    ``teacher_card_sha256``, the digest of its card, keys the teacher: an edited card or new
    weights are a new teacher; ``trust_arch_code``, the code the user trusts, lets an architecture of your own be rebuilt).

    ``epochs``: defence budget (None = each method's paper default, see
    :func:`method_options`); ``attack_epochs``: teacher training. ``max_train``/``max_test``:
    use a fixed random subset of the data (quick runs). ``ablation``/``ablation_value``: what
    this cell varies; ``variant``: its column label; ``x``/``series``: where it goes in an
    ablation plot. ``device``, ``data_root`` (the folder of a torchvision dataset),
    ``teacher_dir`` (where the folder is: its weights' digest is what counts) and
    ``trust_arch_code`` do not change the cell's identity. ``test_part``: measure on the
    ``"development"`` or ``"evaluation"`` part of the test set
    (:func:`medic_viz.experiments.protocol.part_of_test_set`), None the whole test set.
    ``clean_from``: ``"tracks"`` draws the clean subset from as few of the training set's tracks
    as it takes (:func:`medic_viz.data.tracks.frame_tracks`), None at random. ``dataset_sha256``, the digest of a
    dataset file (:func:`build_grid` fills it in), identifies the data in place of the path, so
    the same file named by another path (``../data/x.npz``, ``/abs/data/x.npz``) keeps the ids;
    without it the path string identifies it (the ids grids had before; see :meth:`legacy`).
    """

    dataset: str
    model: str
    attack: str
    method: str
    seed: int
    target: int | None = 0
    rate: float | None = None
    attack_options: dict = field(default_factory=dict)
    method_options: dict = field(default_factory=dict)
    fraction: float = 0.05
    epochs: int | None = None
    attack_epochs: int = 20
    max_train: int | None = None
    max_test: int | None = None
    ablation: str = "none"
    ablation_value: Any = None
    variant: str = ""
    series: str = ""
    x: float | None = None
    device: str = "auto"
    teacher_seed: int | None = None
    data_root: str | None = None
    teacher_dir: str | None = None
    teacher_sha256: str | None = None
    trust_arch_code: str | None = None
    dataset_sha256: str | None = None
    teacher_card_sha256: str | None = None
    test_part: str | None = None
    clean_from: str | None = None

    def legacy(self) -> "CellSpec":
        """This cell as grids made before datasets were identified by content: the path string
        identifies the data. A resumed grid counts a run stored under a legacy id as done
        (:func:`~medic_viz.experiments.runner.run_grid`)."""
        return replace(self, dataset_sha256=None)

    def _data_key(self) -> dict:
        key = {"dataset": self.dataset} if self.dataset_sha256 is None else {"dataset_sha256": self.dataset_sha256}
        if self.test_part is not None:  # the teacher's numbers are measured on this part (None: the ids before parts)
            key["test_part"] = self.test_part
        return key

    @property
    def attack_seed(self) -> int:
        """Seed of the trojaned teacher: ``teacher_seed`` if set (one teacher shared by every
        seed of the grid, seeds then vary only the defence), else the cell's seed."""
        return self.seed if self.teacher_seed is None else int(self.teacher_seed)

    def teacher_key(self) -> dict:
        """Everything the trojaned teacher depends on (a folder's: its weights, and the test
        set its clean accuracy and ASR are measured on)."""
        if self.teacher_dir is not None:
            key = {**self._data_key(), "model": self.model, "teacher_sha256": self.teacher_sha256,
                   "max_test": self.max_test}
            if self.teacher_card_sha256 is not None:  # grids made before cards counted: the ids they had
                key["teacher_card_sha256"] = self.teacher_card_sha256
            return key
        return {
            **self._data_key(), "model": self.model, "attack": self.attack,
            "attack_options": self.attack_options, "target": self.target, "rate": self.rate,
            "attack_epochs": self.attack_epochs, "seed": self.attack_seed, "max_train": self.max_train,
        }

    @property
    def teacher_id(self) -> str:
        if self.teacher_dir is not None:
            return f"{_slug(self.attack)}-{_slug(self.model)}-{_digest(self.teacher_key(), 10)}"
        return f"{_slug(self.attack)}-{_slug(self.model)}-s{self.attack_seed}-{_digest(self.teacher_key(), 10)}"

    def identity(self) -> dict:
        """The fields that determine the cell's result (the device, wherever it appears, and
        where the data lives do not)."""
        d = asdict(self)
        for name in ("device", "data_root", "teacher_dir", "trust_arch_code"):
            d.pop(name)
        if d["teacher_sha256"] is None:  # a grid-trained teacher: the identity it had before folders existed
            d.pop("teacher_sha256")
        if d["teacher_card_sha256"] is None:  # likewise, before a folder's card counted
            d.pop("teacher_card_sha256")
        if d["test_part"] is None:  # the whole test set: the identity cells had before the protocol
            d.pop("test_part")
        if d["clean_from"] is None:  # clean images at random: the identity cells had before tracks
            d.pop("clean_from")
        if d["dataset_sha256"] is None:  # the data named by its path: the identity it had before digests
            d.pop("dataset_sha256")
        else:
            d.pop("dataset")
        d["method_options"] = {k: v for k, v in d["method_options"].items() if k != "device"}
        return d

    @property
    def cell_id(self) -> str:
        label = f"{self.attack}-{self.method}-s{self.seed}"
        if self.ablation != "none":
            label += f"-{self.ablation}={_slug(json.dumps(self.ablation_value, sort_keys=True, default=str))}"
        return f"{_slug(label)}-{_digest(self.identity(), 10)}"

    @property
    def label(self) -> str:
        """``variant`` with the method options this cell sets beyond its method's defaults for the
        run and beyond what its ablation sweeps (the grid's ``medic=`` options, e.g.
        ``"MEDIC (impact=scaled)"``): for progress lines; not part of the cell's identity."""
        base = defense_class(self.method).pinned_options(method_options(self.method, epochs=self.epochs, seed=self.seed))
        swept = set(self.ablation_value) if isinstance(self.ablation_value, dict) else {self.ablation}
        extra = [f"{k}={v}" for k, v in sorted(self.method_options.items())
                 if k != "device" and k not in swept and (k not in base or base[k] != v)]
        return f"{self.variant} ({', '.join(extra)})" if extra else self.variant

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CellSpec":
        return cls(**dict(data))


def _whole(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def validate_cells(cells: Sequence[CellSpec]) -> None:
    """Check every setting of every cell that can be checked without data or a device — the
    attack's target, rate and options, the epochs, subset sizes, seeds, and each method's
    options (by building the defence object, which validates τ, λ, learning rates …) — so
    that a bad grid fails here, before any teacher is trained. Raises ValueError naming the
    first bad setting and the cell it belongs to."""
    checked: set[str] = set()
    for cell in cells:
        try:
            if cell.teacher_dir is None or cell.target is not None:
                _whole(cell.target, "target", 0)
            _whole(cell.seed, "seed", 0)
            _whole(cell.attack_epochs, "attack_epochs", 1)
            if cell.clean_from is not None and cell.clean_from not in CLEAN_FROM:
                raise ValueError(f"clean_from must be one of {', '.join(CLEAN_FROM)} or None (images), "
                                 f"got {cell.clean_from!r}")
            if cell.test_part is not None and cell.test_part not in ROLES:
                raise ValueError(f"test_part must be one of {', '.join(ROLES)} or None (the whole test set), "
                                 f"got {cell.test_part!r}")
            if cell.epochs is not None:
                _whole(cell.epochs, "epochs", 1)
            for name in ("max_train", "max_test"):
                if getattr(cell, name) is not None:
                    _whole(getattr(cell, name), name, 1)
            if cell.rate is not None and (isinstance(cell.rate, bool) or not isinstance(cell.rate, numbers.Real)
                                          or not 0 < cell.rate <= 1):
                raise ValueError(f"rate must be a poison rate in (0, 1], got {cell.rate!r}")
            if isinstance(cell.fraction, bool) or not isinstance(cell.fraction, numbers.Real) or not 0 < cell.fraction <= 1:
                raise ValueError(f"fraction must be in (0, 1], got {cell.fraction!r}")
            key = json.dumps([cell.attack, cell.attack_options, cell.method, cell.method_options, cell.attack_epochs,
                              cell.attack_seed, cell.device, cell.teacher_dir], sort_keys=True, default=str)
            if key in checked:
                continue
            checked.add(key)
            if cell.teacher_dir is not None:  # a given model: nothing to train it with
                make_defense(cell.method, **cell.method_options)
                continue
            spec = attack_spec(cell.attack)
            params = {k: v for k, v in cell.attack_options.items() if k not in spec.train_options}
            unknown = sorted(set(params) - set(spec.parameters()))
            if unknown:
                raise ValueError(f"attack {spec.name!r} does not accept {unknown}; accepted: {spec.parameters()}")
            TrainConfig(**{**ATTACK_TRAIN_DEFAULTS, "epochs": cell.attack_epochs, "seed": cell.attack_seed,
                           "device": cell.device, "progress": False})
            make_defense(cell.method, **cell.method_options)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"grid cell {cell.attack} × {cell.method} seed {cell.seed}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# building grids
# ----------------------------------------------------------------------------------------------


def method_options(method: str, *, epochs: int | None, seed: int, device: str = "auto") -> dict:
    """Options of ``method`` for a cell: the run's seed (also in the method's
    :attr:`~medic_viz.defenses.base.ConfiguredDefense.seed_options`, e.g. a fresh student's
    init) and device, no live evaluation, and — when ``epochs`` is given — one budget mapped
    onto the method's phases by its :meth:`~medic_viz.defenses.base.ConfiguredDefense.epoch_options`
    (NAD's teacher fine-tuning ``max(1, epochs // 2)``, MCR's endpoint and curve ``epochs``
    each, ANP ``epochs`` of mask optimisation instead of 2000 iterations). ``epochs=None``
    keeps the paper defaults of each method. The options are those of the run's settings
    (:meth:`medic_viz.run_settings.RunSettings.to_defense_options`, settings at their defaults
    left to the method: :func:`with_medic_defaults` writes MEDIC's out); the device is where the
    cell will run, which need not be this machine."""
    settings = RunSettings(method=method, epochs=None if epochs is None else int(epochs), seed=int(seed))
    opts = settings.to_defense_options(defaults=False)
    opts.update({"device": device, "progress": False, "eval_every": 0})
    return opts


def with_medic_defaults(options: Mapping[str, Any]) -> dict:
    """MEDIC ``options`` with the engine's current defaults written out (λ, the layer set and,
    without ``tau``, the share τ is calibrated to), so that a cell's id changes when a default
    does: :meth:`Medic.pinned_options <medic_viz.defenses.medic.Medic.pinned_options>`."""
    return defense_class(MAIN_METHOD).pinned_options(options)


def _split_values(values: Mapping[str, Sequence] | None, ablation: str) -> dict[str, tuple]:
    base = dict(DEFAULT_ABLATION_VALUES.get(ablation, {}))
    for k, v in (values or {}).items():
        if v is None:
            continue
        if k not in base:
            raise ValueError(f"ablation {ablation!r} does not sweep {k!r}; it sweeps {sorted(base) or 'nothing'}")
        vals = tuple(v)
        if not vals:
            raise ValueError(f"give at least one value for {k!r}")
        base[k] = vals
    return base


def _folder_sources(teachers: Sequence[Any], dataset: str | None, trust_arch_code: str | None) -> list[tuple]:
    """``(label, architecture, attack options, own cell fields)`` of each teacher folder, refused
    up front (one line naming the folder) when a folder is not a model folder, is given twice,
    shares its name with another, holds an architecture of your own that ``trust_arch_code`` does not name,
    has a card whose attack cannot be built, or names a dataset file (when ``dataset`` is None)
    that is missing or changed. The cells are keyed by the data's, the weights' and the card's
    digests."""
    trust_arch_code = check_trusted_code(trust_arch_code)
    folders = [read_teacher_folder(t) for t in teachers]
    seen: dict[str, str] = {}
    for f in folders:
        if f.label in seen:
            same = seen[f.label] == f.path
            raise ValueError(f"--teacher {f.path}: given twice" if same else
                             f"--teacher: two folders are named {f.label!r} ({seen[f.label]}, {f.path}); the name is "
                             "the teacher's column in the table, rename one")
        seen[f.label] = f.path
        check_trusted_architecture(f.card.architecture, trust_arch_code, where=f"--teacher {f.path}")
        if f.card.attack:
            try:
                trigger_from_config(f.card.attack)
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"--teacher {f.path}: its card's attack cannot be built ({exc}); fix card.json's "
                                 "attack (or import the model again with --trigger)") from None
    sources: list[tuple] = []
    for f in folders:
        data = str(dataset) if dataset is not None else (card_dataset(f.card, f.path, f"--teacher {f.path}: ") or "signs")
        sources.append((f.label, f.card.architecture, {},
                        dict(dataset=data, dataset_sha256=dataset_record(data)["dataset_sha256"],
                             target=f.card.target_class, teacher_dir=f.path, teacher_sha256=f.sha256,
                             teacher_card_sha256=f.card_sha256, trust_arch_code=trust_arch_code)))
    return sources


def build_grid(
    *,
    dataset: str | None = None,
    model: str = "small_cnn",
    attacks: Sequence[str] = (),
    methods: Sequence[str] = TABLE1_METHODS,
    seeds: int | Sequence[int] = 3,
    target: int = 0,
    rate: float | None = None,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    fraction: float = 0.05,
    epochs: int | None = None,
    attack_epochs: int = 20,
    max_train: int | None = None,
    max_test: int | None = None,
    ablation: str = "none",
    values: Mapping[str, Sequence] | None = None,
    medic: Mapping[str, Any] | None = None,
    device: str = "auto",
    teacher_seed: int | None = None,
    data_root: str | None = None,
    teachers: Sequence[Any] = (),
    trust_arch_code: str | None = None,
    test_part: str | None = None,
    clean_from: str | None = None,
) -> list[CellSpec]:
    """The cells of a comparison (``ablation="none"``) or of one of the paper's ablations.

    ``seeds``: a count (seeds 0..n-1) or explicit seeds. ``medic``: options of the MEDIC
    column (e.g. ``{"tau": 3}``). ``values``: the swept values of the ablation (defaults:
    :data:`DEFAULT_ABLATION_VALUES`). Ablations sweep MEDIC only, except ``"fraction"``,
    which sweeps every method given. Every cell is checked by :func:`validate_cells`.
    ``data_root``: folder of a torchvision dataset (``cifar10``, ``gtsrb``, ``mnist``).
    ``dataset`` None: ``"signs"`` (the embedded data).

    ``teachers``: model folders (from ``medic-viz import`` or ``attack``) to compare instead of
    ``attacks``: each is one "attack" of the grid, named after the folder, with its card's
    architecture and target, on ``dataset`` or else its card's dataset. ``model``, ``rate``,
    ``attack_options``, ``attack_epochs`` and ``teacher_seed`` do not apply to them; the
    ``arch`` ablation (which trains teachers) is refused. An architecture of your own
    (``package.module:callable``) needs ``trust_arch_code`` naming it, which imports and runs it.
    ``test_part``: measure every cell on the ``"development"`` or ``"evaluation"`` part of the
    test set (:mod:`medic_viz.experiments.protocol`); None: the whole test set. ``clean_from``:
    ``"tracks"`` draws every cell's clean subset from as few training tracks as it takes
    (:attr:`CellSpec.clean_from`); None: at random.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    attacks, teachers = list(attacks or ()), list(teachers or ())
    if attacks and teachers:
        raise ValueError("give attacks (teachers trained by the grid) or teacher folders (models given), not both")
    if not attacks and not teachers:
        raise ValueError("give at least one attack or teacher folder")
    for a in attacks:
        if a not in ATTACKS:
            raise ValueError(f"unknown attack {a!r}; available attacks: {', '.join(ATTACKS)}")
    methods = [canonical_name(m) for m in methods]
    if not methods:
        raise ValueError("give at least one method")
    sources: list[tuple] = [(a, model, dict((attack_options or {}).get(a, {})), {}) for a in attacks]
    if teachers:
        if ablation == "arch":
            raise ValueError("the arch ablation trains a teacher per architecture; it does not take teacher folders")
        sources = _folder_sources(teachers, dataset, trust_arch_code)
    elif model not in available_models():
        raise ValueError(f"unknown model {model!r}; available: {', '.join(available_models())}")
    if isinstance(seeds, bool) or (isinstance(seeds, int) and seeds < 1):
        raise ValueError(f"seeds must be a number of seeds >= 1 or a list of seeds, got {seeds!r}")
    seed_list = list(range(int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("give at least one seed")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not (0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    _whole(target, "target", 0)  # before int() below, which would turn 1.5 into 1
    _whole(attack_epochs, "attack_epochs", 1)
    medic_opts = dict(medic or {})
    sweep = _split_values(values, ablation)
    base = dict(dataset=str(dataset or "signs"), target=int(target), rate=rate, fraction=float(fraction), epochs=epochs,
                  attack_epochs=int(attack_epochs), max_train=max_train, max_test=max_test, device=device,
                  teacher_seed=None if teacher_seed is None else int(teacher_seed),
                  data_root=None if data_root is None else str(data_root), test_part=test_part,
                  clean_from=clean_from)
    if dataset is not None and Path(dataset).is_file():
        base["dataset_sha256"] = file_sha256(dataset)

    def options_for(method: str, seed: int, extra: Mapping[str, Any] | None = None) -> dict:
        opts = method_options(method, epochs=epochs, seed=seed, device=device)
        if method == MAIN_METHOD:  # the grid's ``medic=`` options
            opts.update(medic_opts)
        opts.update(extra or {})
        return defense_class(method).pinned_options(opts)

    main, shown = MAIN_METHOD, DISPLAY_NAMES[MAIN_METHOD]  # the method the ablations sweep

    cells: list[CellSpec] = []
    for attack, model, a_opts, own in sources:
        common = {**base, **own}
        for seed in seed_list:
            if ablation == "none":
                for m in methods:
                    cells.append(CellSpec(model=model, attack=attack, method=m, seed=seed, attack_options=a_opts,
                                          method_options=options_for(m, seed), variant=DISPLAY_NAMES[m], **common))
            elif ablation == "fraction":
                for frac in sweep["fraction"]:
                    for m in methods:
                        spec = dict(common, fraction=float(frac))
                        cells.append(CellSpec(model=model, attack=attack, method=m, seed=seed, attack_options=a_opts,
                                              method_options=options_for(m, seed), ablation="fraction",
                                              ablation_value=float(frac), variant=f"{DISPLAY_NAMES[m]} {100 * frac:g}%",
                                              series=f"{attack} · {DISPLAY_NAMES[m]}", x=float(frac), **spec))
            elif ablation == "layers":
                for i, layer_set in enumerate(sweep["layers"]):
                    cells.append(CellSpec(model=model, attack=attack, method=main, seed=seed, attack_options=a_opts,
                                          method_options=options_for(main, seed, {"layers": layer_set}),
                                          ablation="layers", ablation_value=layer_set, variant=f"{shown} layers={layer_set}",
                                          series=attack, x=float(i), **common))
            elif ablation == "tau":
                for tau in sweep["tau"]:
                    cells.append(CellSpec(model=model, attack=attack, method=main, seed=seed, attack_options=a_opts,
                                          method_options=options_for(main, seed, {"tau": float(tau)}),
                                          ablation="tau", ablation_value=float(tau), variant=f"{shown} τ={tau:g}",
                                          series=attack, x=float(tau), **common))
            elif ablation == "lambda_tau":
                for lam in sweep["lam"]:
                    for tau in sweep["tau"]:
                        cells.append(CellSpec(model=model, attack=attack, method=main, seed=seed, attack_options=a_opts,
                                              method_options=options_for(main, seed, {"tau": float(tau), "lam": float(lam)}),
                                              ablation="lambda_tau", ablation_value={"lam": float(lam), "tau": float(tau)},
                                              variant=f"{shown} λ={lam:g} τ={tau:g}", series=f"{attack} λ={lam:g}",
                                              x=float(tau), **common))
            elif ablation == "criteria":
                for crit in sweep["criteria"]:
                    for tau in sweep["tau"]:
                        cells.append(CellSpec(model=model, attack=attack, method=main, seed=seed, attack_options=a_opts,
                                              method_options=options_for(main, seed, {"tau": float(tau), "criteria": crit}),
                                              ablation="criteria", ablation_value={"criteria": crit, "tau": float(tau)},
                                              variant=f"{shown} {crit} τ={tau:g}", series=f"{attack} {crit}",
                                              x=float(tau), **common))
            elif ablation == "arch":
                for arch in sweep["arch"]:
                    if arch not in available_models():
                        raise ValueError(f"unknown model {arch!r}; available: {', '.join(available_models())}")
                    for tau in sweep["tau"]:
                        # App. E.7: lr 1e-3 for every architecture
                        cells.append(CellSpec(model=arch, attack=attack, method=main, seed=seed, attack_options=a_opts,
                                              method_options=options_for(main, seed, {"tau": float(tau), "lr": 1e-3}),
                                              ablation="arch", ablation_value={"arch": arch, "tau": float(tau)},
                                              variant=f"{shown} {arch} τ={tau:g}", series=f"{attack} {arch}",
                                              x=float(tau), **common))
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        raise ValueError("the grid has duplicate cells; give each attack, method, seed and value once")
    validate_cells(cells)
    return cells
