"""Experiment grids: attacks × methods × seeds (× an ablation value), resumable, on one machine
or on a Ray cluster.

Each *cell* of a grid is a pure function of its :class:`CellSpec` and of its trojaned
*teacher* (trained once per attack, seed and architecture, cached under ``DIR/teachers/``):
:func:`run_cell` builds the clean subset, runs the defence and measures clean accuracy and
ASR on the test set. Finished cells are appended to ``DIR/runs.jsonl`` as they complete, keyed
by :attr:`CellSpec.cell_id`, so running the same grid again skips them (resume after an
interruption); failed cells go to ``DIR/errors.jsonl`` and are retried next time. From the
finished cells the runner writes ``DIR/results.csv`` (one row per run), ``DIR/table.md``
(mean ± std per attack and method, plus the average-drop rows of the paper's Table 1) and
``DIR/comparison.html`` (grouped bars, or curves over τ / the data fraction for ablations).

Executors (no scheduler of our own):

* ``"local"``: cells one after another, or ``workers`` > 1 in a
  :class:`concurrent.futures.ProcessPoolExecutor`;
* ``"ray"``: each cell is a Ray task (``num_gpus=1`` when the cluster has GPUs) on the cluster
  of ``ray.init(address=...)``; needs ``pip install 'medic-viz[ray]'``. Workers must see the
  dataset path and have medic_viz installed.

Ablations of the paper, as options of the same grid (``ablation=``): ``"tau"`` (Figure 4),
``"lambda_tau"`` (Figure 6), ``"fraction"`` (Table 4), ``"criteria"`` (Figure 7), ``"arch"``
(Figure 8).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = [
    "CellSpec",
    "GridResult",
    "ABLATIONS",
    "DEFAULT_ABLATION_VALUES",
    "TABLE1_METHODS",
    "ALL_METHODS",
    "build_grid",
    "method_options",
    "run_cell",
    "train_teacher",
    "run_grid",
    "compare",
    "read_runs",
    "aggregate",
    "format_table",
    "comparison_figure",
    "write_reports",
]

ABLATIONS: tuple[str, ...] = ("none", "tau", "lambda_tau", "fraction", "criteria", "arch")

#: Values swept by each ablation when none are given (paper Figures 4, 6, 7, 8 and Table 4).
DEFAULT_ABLATION_VALUES: dict[str, dict[str, tuple]] = {
    "tau": {"tau": (0.0, 1.0, 2.0, 3.0, 5.0, 7.0)},
    "lambda_tau": {"lam": (1.0, 10.0, 100.0), "tau": (1.0, 3.0, 5.0, 7.0)},
    "fraction": {"fraction": (0.05, 0.1)},
    "criteria": {"criteria": ("activation", "impact", "both"), "tau": (1.0, 3.0, 5.0, 7.0)},
    "arch": {"arch": ("vgg11_bn", "mobilenet_v1", "wrn16_1"), "tau": (0.0, 1.0, 3.0, 5.0)},
}

#: The methods of the paper's Table 1, and every method the toolkit has.
TABLE1_METHODS: tuple[str, ...] = ("finetune", "fineprune", "nad", "mcr", "anp", "medic")
ALL_METHODS: tuple[str, ...] = ("finetune", "fineprune", "nad", "mcr", "anp", "kd", "scratch", "medic")


def _digest(payload: Any, n: int = 12) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-.=" else "_" for ch in text)


@dataclass
class CellSpec:
    """One run of the grid: a defence ``method`` (with ``method_options``) on the model trojaned
    by ``attack`` (``attack_options``, ``target``, ``rate``) for ``seed``.

    ``epochs``: defence budget (None = each method's paper default, see
    :func:`method_options`); ``attack_epochs``: teacher training. ``max_train``/``max_test``:
    use a fixed random subset of the data (quick runs). ``ablation``/``ablation_value``: what
    this cell varies; ``variant``: its column label; ``x``/``series``: where it goes in an
    ablation plot. ``device`` does not change the cell's identity.
    """

    dataset: str
    model: str
    attack: str
    method: str
    seed: int
    target: int = 0
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

    @property
    def attack_seed(self) -> int:
        """Seed of the trojaned teacher: ``teacher_seed`` if set (one teacher shared by every
        seed of the grid, seeds then vary only the defence), else the cell's seed."""
        return self.seed if self.teacher_seed is None else int(self.teacher_seed)

    def teacher_key(self) -> dict:
        """Everything the trojaned teacher depends on."""
        return {
            "dataset": self.dataset, "model": self.model, "attack": self.attack,
            "attack_options": self.attack_options, "target": self.target, "rate": self.rate,
            "attack_epochs": self.attack_epochs, "seed": self.attack_seed, "max_train": self.max_train,
        }

    @property
    def teacher_id(self) -> str:
        return f"{_slug(self.attack)}-{_slug(self.model)}-s{self.attack_seed}-{_digest(self.teacher_key(), 10)}"

    def identity(self) -> dict:
        """The fields that determine the cell's result (the device, wherever it appears, does not)."""
        d = asdict(self)
        d.pop("device")
        d["method_options"] = {k: v for k, v in d["method_options"].items() if k != "device"}
        return d

    @property
    def cell_id(self) -> str:
        label = f"{self.attack}-{self.method}-s{self.seed}"
        if self.ablation != "none":
            label += f"-{self.ablation}={_slug(json.dumps(self.ablation_value, sort_keys=True, default=str))}"
        return f"{_slug(label)}-{_digest(self.identity(), 10)}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CellSpec":
        return cls(**dict(data))


# ----------------------------------------------------------------------------------------------
# building grids
# ----------------------------------------------------------------------------------------------


def method_options(method: str, *, epochs: int | None, seed: int, device: str = "auto") -> dict:
    """Options of ``method`` for a cell: the run's seed and device, no live evaluation, and —
    when ``epochs`` is given — one budget mapped onto each method's phases: the main phase
    gets ``epochs``; NAD's teacher fine-tuning ``max(1, epochs // 2)`` (10 vs 20 in the paper);
    MCR's endpoint and curve ``epochs`` each; ANP ``epochs`` of mask optimisation instead of
    2000 iterations. ``epochs=None`` keeps the paper defaults of each method."""
    from medic_viz.defenses.baselines import _canonical

    key = _canonical(method)
    opts: dict[str, Any] = {"device": device, "seed": int(seed), "progress": False, "eval_every": 0}
    if key in ("medic", "kd", "scratch"):
        opts["student_seed"] = int(seed)
    if key == "mcr":
        opts["curve_seed"] = int(seed)
    if key == "anp":
        opts["noise_seed"] = int(seed)
    if epochs is not None:
        e = int(epochs)
        if e < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        opts["epochs"] = e
        if key == "nad":
            opts["teacher_epochs"] = max(1, e // 2)
        elif key == "mcr":
            opts["endpoint_epochs"] = e
        elif key == "anp":
            opts["iterations"] = None
    return opts


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


def build_grid(
    *,
    dataset: str,
    model: str = "small_cnn",
    attacks: Sequence[str],
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
) -> list[CellSpec]:
    """The cells of a comparison (``ablation="none"``) or of one of the paper's ablations.

    ``seeds``: a count (seeds 0..n-1) or explicit seeds. ``medic``: options of the MEDIC
    column (e.g. ``{"tau": 3}``). ``values``: the swept values of the ablation (defaults:
    :data:`DEFAULT_ABLATION_VALUES`). Ablations sweep MEDIC only, except ``"fraction"``,
    which sweeps every method given.
    """
    from medic_viz.attacks.advanced import ATTACKS
    from medic_viz.defenses.baselines import DISPLAY_NAMES, _canonical
    from medic_viz.models.zoo import available_models

    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    if not attacks:
        raise ValueError("give at least one attack")
    for a in attacks:
        if a not in ATTACKS:
            raise ValueError(f"unknown attack {a!r}; available attacks: {', '.join(ATTACKS)}")
    methods = [_canonical(m) for m in methods]
    if not methods:
        raise ValueError("give at least one method")
    if model not in available_models():
        raise ValueError(f"unknown model {model!r}; available: {', '.join(available_models())}")
    seed_list = list(range(int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("give at least one seed")
    if not (0 < float(fraction) <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    medic_opts = dict(medic or {})
    sweep = _split_values(values, ablation)
    attack_options = dict(attack_options or {})
    common = dict(dataset=str(dataset), target=int(target), rate=rate, fraction=float(fraction), epochs=epochs,
                  attack_epochs=int(attack_epochs), max_train=max_train, max_test=max_test, device=device,
                  teacher_seed=None if teacher_seed is None else int(teacher_seed))

    def options_for(method: str, seed: int, extra: Mapping[str, Any] | None = None) -> dict:
        opts = method_options(method, epochs=epochs, seed=seed, device=device)
        if method == "medic":
            opts.update(medic_opts)
        opts.update(extra or {})
        return opts

    cells: list[CellSpec] = []
    for attack in attacks:
        a_opts = dict(attack_options.get(attack, {}))
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
            elif ablation == "tau":
                for tau in sweep["tau"]:
                    cells.append(CellSpec(model=model, attack=attack, method="medic", seed=seed, attack_options=a_opts,
                                          method_options=options_for("medic", seed, {"tau": float(tau)}),
                                          ablation="tau", ablation_value=float(tau), variant=f"MEDIC τ={tau:g}",
                                          series=attack, x=float(tau), **common))
            elif ablation == "lambda_tau":
                for lam in sweep["lam"]:
                    for tau in sweep["tau"]:
                        cells.append(CellSpec(model=model, attack=attack, method="medic", seed=seed, attack_options=a_opts,
                                              method_options=options_for("medic", seed, {"tau": float(tau), "lam": float(lam)}),
                                              ablation="lambda_tau", ablation_value={"lam": float(lam), "tau": float(tau)},
                                              variant=f"MEDIC λ={lam:g} τ={tau:g}", series=f"{attack} λ={lam:g}",
                                              x=float(tau), **common))
            elif ablation == "criteria":
                for crit in sweep["criteria"]:
                    for tau in sweep["tau"]:
                        cells.append(CellSpec(model=model, attack=attack, method="medic", seed=seed, attack_options=a_opts,
                                              method_options=options_for("medic", seed, {"tau": float(tau), "criteria": crit}),
                                              ablation="criteria", ablation_value={"criteria": crit, "tau": float(tau)},
                                              variant=f"MEDIC {crit} τ={tau:g}", series=f"{attack} {crit}",
                                              x=float(tau), **common))
            elif ablation == "arch":
                for arch in sweep["arch"]:
                    if arch not in available_models():
                        raise ValueError(f"unknown model {arch!r}; available: {', '.join(available_models())}")
                    for tau in sweep["tau"]:
                        # App. E.7: lr 1e-3 for every architecture
                        cells.append(CellSpec(model=arch, attack=attack, method="medic", seed=seed, attack_options=a_opts,
                                              method_options=options_for("medic", seed, {"tau": float(tau), "lr": 1e-3}),
                                              ablation="arch", ablation_value={"arch": arch, "tau": float(tau)},
                                              variant=f"MEDIC {arch} τ={tau:g}", series=f"{attack} {arch}",
                                              x=float(tau), **common))
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        raise ValueError("the grid has duplicate cells; give each attack, method, seed and value once")
    return cells


# ----------------------------------------------------------------------------------------------
# pure cell functions (they run in worker processes / Ray tasks)
# ----------------------------------------------------------------------------------------------

_SPLITS_CACHE: dict[tuple, Any] = {}


def _splits(dataset: str, max_train: int | None, max_test: int | None):
    """The dataset, subsampled to fixed random subsets (seed 12345, independent of the cell's
    seed) when ``max_train``/``max_test`` are set; cached per process."""
    import torch

    from medic_viz.data import load_dataset
    from medic_viz.data.arrays import DatasetSplits

    key = (dataset, max_train, max_test)
    if key not in _SPLITS_CACHE:
        splits = load_dataset(dataset)
        train_set, test_set = splits.train, splits.test
        g = torch.Generator().manual_seed(12345)
        if max_train is not None and max_train < len(train_set):
            train_set = train_set.subset(torch.randperm(len(train_set), generator=g)[: int(max_train)].sort().values)
        if max_test is not None and max_test < len(test_set):
            test_set = test_set.subset(torch.randperm(len(test_set), generator=g)[: int(max_test)].sort().values)
        if len(_SPLITS_CACHE) >= 4:
            _SPLITS_CACHE.pop(next(iter(_SPLITS_CACHE)))
        _SPLITS_CACHE[key] = DatasetSplits(train_set, test_set)
    return _SPLITS_CACHE[key]


def train_teacher(spec: Mapping[str, Any]) -> dict:
    """Train the trojaned model of a cell (``CellSpec.to_dict()``); returns a picklable payload
    ``{"state_dict", "card", "metrics", "attack_config", "target", "seconds"}``."""
    import torch

    from medic_viz.attacks.advanced import train_attack
    from medic_viz.attacks.poison import ATTACK_TRAIN_DEFAULTS
    from medic_viz.training import TrainConfig

    cell = CellSpec.from_dict(spec)
    start = time.perf_counter()
    splits = _splits(cell.dataset, cell.max_train, cell.max_test)
    cfg = TrainConfig(**{**ATTACK_TRAIN_DEFAULTS, "epochs": int(cell.attack_epochs), "seed": cell.attack_seed,
                         "device": cell.device, "progress": False, "eval_every": 0})
    trojan = train_attack(cell.attack, splits, target=cell.target, rate=cell.rate, options=cell.attack_options,
                          architecture=cell.model, config=cfg, seed=cell.attack_seed, eval_max_images=None)
    card = trojan.card(splits, dataset=cell.dataset, notes=f"teacher of the {cell.attack} cells, seed {cell.attack_seed}")
    return {
        "state_dict": {k: v.detach().cpu() for k, v in trojan.model.state_dict().items()},
        "card": card.to_dict(),
        "metrics": trojan.metrics.as_dict(),
        "attack_config": trojan.trigger.to_config() if trojan.trigger is not None else None,
        "target": cell.target,
        "rate": trojan.rate,
        "seconds": time.perf_counter() - start,
        "torch": torch.__version__,
    }


def _model_from_payload(payload: Mapping[str, Any]):
    from medic_viz.io import ModelCard
    from medic_viz.models.zoo import build_model

    card = ModelCard.from_dict(payload["card"])
    normalize = card.normalize_pair
    model = build_model(card.architecture, card.num_classes, in_channels=card.in_channels, input_size=card.input_size,
                        normalize=normalize, **dict(card.arch_kwargs))
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def run_cell(spec: Mapping[str, Any], teacher: Mapping[str, Any]) -> dict:
    """Run one cell: clean subset (``fraction``, class-balanced, chosen by the seed), the
    defence (no test data during training), then clean accuracy and ASR of the repaired model
    on the whole (or ``max_test``) test set. Returns the result row (JSON-serialisable)."""
    import torch

    from medic_viz.attacks.advanced import any_trigger_from_config, attack_evaluator
    from medic_viz.data.arrays import clean_subset
    from medic_viz.defenses.baselines import make_defense
    from medic_viz.metrics import resolve_device

    cell = CellSpec.from_dict(spec)
    start = time.perf_counter()
    torch.manual_seed(cell.seed)
    splits = _splits(cell.dataset, cell.max_train, cell.max_test)
    device = resolve_device(cell.device)
    model = _model_from_payload(teacher).to(device)
    attack = any_trigger_from_config(teacher["attack_config"]) if teacher.get("attack_config") else None
    target = teacher.get("target")
    clean = clean_subset(splits.train, cell.fraction, cell.seed)
    evaluator = attack_evaluator(attack, splits.test, target, device=device)
    before = teacher["metrics"]  # measured on the same test set when the teacher was trained
    defense = make_defense(cell.method, **cell.method_options)
    result = defense.run(model, clean)
    after = evaluator(result.model.to(device))
    extra = {k: v for k, v in result.config.items() if k in (
        "t", "n_pruned", "n_channels", "pruned_layer", "attention_layers", "mask_epochs", "n_neurons")}
    return {
        "cell_id": cell.cell_id,
        "teacher_id": cell.teacher_id,
        "dataset": cell.dataset,
        "model": cell.model,
        "attack": cell.attack,
        "method": cell.method,
        "variant": cell.variant,
        "series": cell.series,
        "x": cell.x,
        "seed": cell.seed,
        "ablation": cell.ablation,
        "ablation_value": cell.ablation_value,
        "fraction": cell.fraction,
        "n_clean_subset": len(clean),
        "epochs": cell.epochs,
        "attack_epochs": cell.attack_epochs,
        "target": target,
        "before_clean_acc": before["clean_acc"],
        "before_asr": before.get("asr"),
        "clean_acc": after.clean_acc,
        "asr": after.asr,
        "n_clean": after.n_clean,
        "n_asr": after.n_asr,
        "train_seconds": round(result.seconds, 3),
        "seconds": round(time.perf_counter() - start, 3),
        "device": str(device),
        "method_options": cell.method_options,
        "extra": extra,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


# ----------------------------------------------------------------------------------------------
# executors
# ----------------------------------------------------------------------------------------------

Task = tuple[str, Callable[..., Any], tuple]


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(threads)))


class _Executor:
    """Runs (key, function, args) tasks and reports each outcome as it arrives: in this
    process, in one process pool kept for the whole grid (so workers keep their dataset
    cache), or as Ray tasks. Use as a context manager."""

    def __init__(self, executor: str, workers: int, address: str | None, gpu_per_task: bool) -> None:
        self.executor = executor
        self.workers = int(workers)
        self.address = address
        self.gpu_per_task = gpu_per_task
        self._pool = None
        self._ray = None
        self._started_ray = False

    def __enter__(self) -> "_Executor":
        if self.executor == "local" and self.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_init, initargs=(threads,))
        elif self.executor == "ray":
            ray = _import_ray()
            if not ray.is_initialized():
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
                self._started_ray = True
            self._ray = ray
        elif self.executor != "local":
            raise ValueError(f"executor must be 'local' or 'ray', got {self.executor!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._started_ray and self._ray is not None:
            self._ray.shutdown()
        self._ray = None

    def run(self, tasks: Sequence[Task], on_result: Callable[[str, Any], None],
            on_error: Callable[[str, BaseException, str], None]) -> None:
        if not tasks:
            return
        if self._pool is not None:
            from concurrent.futures import as_completed

            futures = {self._pool.submit(fn, *args): key for key, fn, args in tasks}
            for fut in as_completed(futures):
                key = futures[fut]
                try:
                    value = fut.result()
                except Exception as exc:
                    on_error(key, exc, "".join(traceback.format_exception(exc)))
                else:
                    on_result(key, value)
            return
        if self._ray is not None:
            ray = self._ray
            has_gpu = ray.cluster_resources().get("GPU", 0) > 0
            num_gpus = 1 if (has_gpu and self.gpu_per_task) else 0
            remote_fns: dict[Callable, Any] = {}
            refs = {}
            for key, fn, args in tasks:
                if fn not in remote_fns:
                    remote_fns[fn] = ray.remote(num_gpus=num_gpus, num_cpus=1, max_retries=0)(fn)
                refs[remote_fns[fn].remote(*args)] = key
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    key = refs.pop(ref)
                    try:
                        value = ray.get(ref)
                    except Exception as exc:
                        on_error(key, exc, "".join(traceback.format_exception(exc)))
                    else:
                        on_result(key, value)
            return
        for key, fn, args in tasks:
            try:
                value = fn(*args)
            except Exception as exc:  # a failed cell must not stop the grid
                on_error(key, exc, traceback.format_exc())
            else:
                on_result(key, value)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the ray executor needs Ray: pip install 'medic-viz[ray]' (or pip install 'ray>=2.9'), "
            "or use --executor local"
        ) from None
    return ray


# ----------------------------------------------------------------------------------------------
# the grid runner
# ----------------------------------------------------------------------------------------------


@dataclass
class GridResult:
    """What a grid run produced: the rows of its finished cells, failures, and file paths."""

    rows: list[dict]
    errors: dict[str, str]
    computed: int
    skipped: int
    paths: dict[str, Path]

    @property
    def ok(self) -> bool:
        return not self.errors


def read_runs(path: str | Path) -> list[dict]:
    """The rows of a ``runs.jsonl`` (a last line cut short by an interruption is ignored)."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "cell_id" in row:
            rows.append(row)
    return rows


def _append_jsonl(path: Path, row: Mapping[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _save_teacher(directory: Path, payload: Mapping[str, Any], key: Mapping[str, Any]) -> None:
    import torch

    from medic_viz.io import ModelCard, save_model

    model = _model_from_payload(payload)
    save_model(model, directory, ModelCard.from_dict(payload["card"]))
    meta = {k: payload[k] for k in ("metrics", "attack_config", "target", "rate", "seconds")}
    meta["key"] = dict(key)
    meta["torch"] = torch.__version__
    tmp = directory / "teacher.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(directory / "teacher.json")  # written last: its presence means the teacher is complete


def _load_teacher(directory: Path) -> dict:
    from medic_viz.io import load_model

    model, card = load_model(directory)
    meta = json.loads((directory / "teacher.json").read_text())
    return {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "card": card.to_dict(),
        "metrics": meta["metrics"],
        "attack_config": meta["attack_config"],
        "target": meta["target"],
        "rate": meta.get("rate"),
    }


def run_grid(
    cells: Sequence[CellSpec],
    out_dir: str | Path,
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    log: Callable[[str], None] | None = print,
    write: bool = True,
) -> GridResult:
    """Run every cell not already in ``out_dir/runs.jsonl``: teachers first (once per attack,
    seed and architecture; reused from ``out_dir/teachers/``), then the defences. Then write
    the CSV, table and figure (``write=True``). Failed cells are listed in the result and in
    ``errors.jsonl``; they do not stop the others."""
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if executor == "ray":
        _import_ray()
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teachers_dir = out / "teachers"
    teachers_dir.mkdir(exist_ok=True)
    runs_path = out / "runs.jsonl"
    errors_path = out / "errors.jsonl"
    (out / "grid.json").write_text(json.dumps([c.to_dict() for c in cells], indent=1, default=str))

    done = {r["cell_id"] for r in read_runs(runs_path)}
    todo = [c for c in cells if c.cell_id not in done]
    skipped = len(cells) - len(todo)
    if skipped:
        say(f"resume: {skipped} of {len(cells)} cells already in {runs_path}")
    errors: dict[str, str] = {}
    gpu = any(c.device != "cpu" for c in cells)

    # phase 1: teachers
    needed: dict[str, CellSpec] = {}
    for c in todo:
        if not (teachers_dir / c.teacher_id / "teacher.json").exists():
            needed.setdefault(c.teacher_id, c)
    if needed:
        say(f"training {len(needed)} trojaned teacher(s)")
    t_start = time.perf_counter()

    def teacher_done(tid: str, payload: Any) -> None:
        _save_teacher(teachers_dir / tid, payload, needed[tid].teacher_key())
        m = payload["metrics"]
        asr = "n/a" if m.get("asr") is None else f"{100 * m['asr']:.1f}%"
        say(f"  teacher {tid}: clean acc {100 * m['clean_acc']:.1f}%, ASR {asr} ({payload['seconds']:.0f} s)")

    def teacher_failed(tid: str, exc: BaseException, tb: str) -> None:
        errors[tid] = f"{type(exc).__name__}: {exc}"
        _append_jsonl(errors_path, {"id": tid, "kind": "teacher", "error": errors[tid], "traceback": tb})
        say(f"  teacher {tid} FAILED: {errors[tid]}")

    # phase 2: cells (their teachers are read back from disk, so every cell sees the same model)
    total = len(todo)
    finished = [0]
    rows_new: list[dict] = []

    def cell_done(cid: str, row: Any) -> None:
        _append_jsonl(runs_path, row)
        rows_new.append(row)
        finished[0] += 1
        asr = "n/a" if row.get("asr") is None else f"{100 * row['asr']:.1f}%"
        say(f"[{finished[0]}/{total}] {row['attack']} × {row['variant']} seed {row['seed']}: "
            f"clean acc {100 * row['clean_acc']:.1f}%, ASR {asr} ({row['seconds']:.0f} s)")

    def cell_failed(cid: str, exc: BaseException, tb: str) -> None:
        finished[0] += 1
        errors[cid] = f"{type(exc).__name__}: {exc}"
        _append_jsonl(errors_path, {"id": cid, "kind": "cell", "error": errors[cid], "traceback": tb})
        say(f"[{finished[0]}/{total}] {cid} FAILED: {errors[cid]}")

    def cell_tasks() -> list[Task]:
        payloads: dict[str, dict] = {}
        tasks: list[Task] = []
        for c in todo:
            if not (teachers_dir / c.teacher_id / "teacher.json").exists():
                cell_failed(c.cell_id, RuntimeError(f"its teacher {c.teacher_id} could not be trained"), "")
                continue
            if c.teacher_id not in payloads:
                payloads[c.teacher_id] = _load_teacher(teachers_dir / c.teacher_id)
            tasks.append((c.cell_id, run_cell, (c.to_dict(), payloads[c.teacher_id])))
        return tasks

    if todo:
        with _Executor(executor, workers, address, gpu) as pool:
            pool.run([(tid, train_teacher, (c.to_dict(),)) for tid, c in needed.items()], teacher_done, teacher_failed)
            pool.run(cell_tasks(), cell_done, cell_failed)
    order = {c.cell_id: i for i, c in enumerate(cells)}
    rows = sorted((r for r in read_runs(runs_path) if r["cell_id"] in order), key=lambda r: order[r["cell_id"]])
    paths = write_reports(rows, out) if (write and rows) else {}
    say(f"{len(rows_new)} cell(s) computed, {skipped} reused, {len(errors)} failed "
        f"in {time.perf_counter() - t_start:.0f} s")
    return GridResult(rows, errors, len(rows_new), skipped, paths)


def compare(out_dir: str | Path, *, executor: str = "local", workers: int = 1, address: str | None = None,
            log: Callable[[str], None] | None = print, **grid: Any) -> GridResult:
    """:func:`build_grid` with ``grid`` keyword options, then :func:`run_grid`."""
    return run_grid(build_grid(**grid), out_dir, executor=executor, workers=workers, address=address, log=log)


# ----------------------------------------------------------------------------------------------
# reports
# ----------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(vals)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return mean, std, n


def _ordered(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def aggregate(rows: Sequence[Mapping[str, Any]]) -> dict:
    """Summary statistics (in %) of finished cells.

    Returns ``{"attacks", "variants", "original": {attack: {...}}, "cells": {(attack,
    variant): {...}}, "drops": {variant: {...}}}``. ``original`` is the trojaned models (one
    per seed), ``cells`` mean/std/n of clean accuracy and ASR, ``drops`` the average over
    attacks of the per-seed drops (before − after) of ASR and accuracy, as Table 1's last rows.
    """
    attacks = _ordered(r["attack"] for r in rows)
    variants = _ordered(r["variant"] for r in rows)
    original: dict[str, dict] = {}
    for a in attacks:
        per_teacher = {}
        for r in rows:
            if r["attack"] == a:
                per_teacher[r["teacher_id"]] = r
        acc = _mean_std([100 * r["before_clean_acc"] for r in per_teacher.values()])
        asr = _mean_std([100 * r["before_asr"] for r in per_teacher.values() if r.get("before_asr") is not None])
        original[a] = {"acc": acc, "asr": asr}
    cells: dict[tuple[str, str], dict] = {}
    for a in attacks:
        for v in variants:
            sel = [r for r in rows if r["attack"] == a and r["variant"] == v]
            if not sel:
                continue
            cells[(a, v)] = {
                "acc": _mean_std([100 * r["clean_acc"] for r in sel]),
                "asr": _mean_std([100 * r["asr"] for r in sel if r.get("asr") is not None]),
                "acc_drop": _mean_std([100 * (r["before_clean_acc"] - r["clean_acc"]) for r in sel]),
                "asr_drop": _mean_std([100 * (r["before_asr"] - r["asr"]) for r in sel
                                       if r.get("asr") is not None and r.get("before_asr") is not None]),
            }
    drops: dict[str, dict] = {}
    for v in variants:
        asr_d = [cells[(a, v)]["asr_drop"][0] for a in attacks if (a, v) in cells and cells[(a, v)]["asr_drop"][2]]
        acc_d = [cells[(a, v)]["acc_drop"][0] for a in attacks if (a, v) in cells]
        drops[v] = {"asr": _mean_std(asr_d)[0], "acc": _mean_std(acc_d)[0], "n_attacks": len(acc_d)}
    return {"attacks": attacks, "variants": variants, "original": original, "cells": cells, "drops": drops}


def _fmt(stat: tuple[float, float, int]) -> str:
    mean, std, n = stat
    if n == 0:
        return "–"
    return f"{mean:.1f}" if n == 1 else f"{mean:.1f} ± {std:.1f}"


def format_table(rows: Sequence[Mapping[str, Any]], *, title: str | None = None) -> str:
    """A Markdown table in the layout of the paper's Table 1 (values in %, mean ± sample std
    over seeds; the last two rows are the average drops of ASR and clean accuracy)."""
    agg = aggregate(rows)
    variants = agg["variants"]
    seeds = sorted({r["seed"] for r in rows})
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    first = rows[0] if rows else {}
    budget = "paper defaults per method" if first.get("epochs") is None else f"{first.get('epochs')} epochs"
    lines.append(
        f"Dataset `{first.get('dataset', '?')}`, model `{first.get('model', '?')}`, {len(seeds)} seed(s) "
        f"({', '.join(map(str, seeds))}), clean data {100 * float(first.get('fraction', 0)):g}% of the training set, "
        f"defence budget: {budget}, teachers: {first.get('attack_epochs', '?')} epochs. Values in %, "
        "mean ± std over seeds."
    )
    lines.append("")
    header = ["Attack", "Metric", "Original"] + list(variants)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for a in agg["attacks"]:
        for metric, label in (("asr", "ASR"), ("acc", "Accuracy")):
            vals = [_fmt(agg["cells"][(a, v)][metric]) if (a, v) in agg["cells"] else "–" for v in variants]
            lines.append("| " + " | ".join([a if metric == "asr" else "", label, _fmt(agg["original"][a][metric])] + vals) + " |")
    drop_asr = [f"{agg['drops'][v]['asr']:.1f}" if not math.isnan(agg["drops"][v]["asr"]) else "–" for v in variants]
    drop_acc = [f"{agg['drops'][v]['acc']:.1f}" if not math.isnan(agg["drops"][v]["acc"]) else "–" for v in variants]
    lines.append("| " + " | ".join(["Avg. drop", "ASR", "-"] + drop_asr) + " |")
    lines.append("| " + " | ".join(["", "Accuracy", "-"] + drop_acc) + " |")
    lines.append("")
    lines.append("Avg. drop: mean over attacks of (original − after), in percentage points.")
    return "\n".join(lines) + "\n"


def comparison_figure(rows: Sequence[Mapping[str, Any]], *, title: str | None = None):
    """Plotly figure: grouped bars (attack on x, one bar per method, error bars = std over
    seeds) for comparisons; curves over the swept value for ablations."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    agg = aggregate(rows)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Clean accuracy (%)", "Attack success rate (%)"))
    ablation = rows[0].get("ablation", "none") if rows else "none"
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    if ablation == "none":
        attacks = agg["attacks"]
        groups = [("Original", {a: agg["original"][a] for a in attacks})] + [
            (v, {a: agg["cells"][(a, v)] for a in attacks if (a, v) in agg["cells"]}) for v in agg["variants"]]
        for i, (name, stats) in enumerate(groups):
            colour = "#bbbbbb" if name == "Original" else palette[(i - 1) % len(palette)]
            for col, metric in ((1, "acc"), (2, "asr")):
                xs = [a for a in attacks if a in stats and stats[a][metric][2]]
                fig.add_trace(go.Bar(
                    x=xs, y=[stats[a][metric][0] for a in xs], name=name, legendgroup=name, showlegend=col == 1,
                    marker_color=colour,
                    error_y=dict(type="data", array=[stats[a][metric][1] for a in xs], visible=True),
                ), row=1, col=col)
        fig.update_layout(barmode="group")
    else:
        series = _ordered(r["series"] for r in rows)
        for i, s in enumerate(series):
            sel = [r for r in rows if r["series"] == s]
            xs = sorted({r["x"] for r in sel})
            for col, metric in ((1, "clean_acc"), (2, "asr")):
                stats = [_mean_std([100 * r[metric] for r in sel if r["x"] == x and r.get(metric) is not None]) for x in xs]
                fig.add_trace(go.Scatter(
                    x=xs, y=[st[0] for st in stats], name=s, legendgroup=s, showlegend=col == 1, mode="lines+markers",
                    line=dict(color=palette[i % len(palette)]),
                    error_y=dict(type="data", array=[st[1] for st in stats], visible=True),
                ), row=1, col=col)
        xlabel = {"fraction": "clean data fraction"}.get(ablation, "temperature τ")
        fig.update_xaxes(title_text=xlabel)
    fig.update_yaxes(range=[0, 101])
    fig.update_layout(title=title or "Backdoor removal: clean accuracy and ASR (mean ± std over seeds)",
                      template="plotly_white", height=480, legend=dict(orientation="h", y=-0.2))
    return fig


_CSV_COLUMNS = ["cell_id", "teacher_id", "dataset", "model", "attack", "method", "variant", "seed", "ablation",
                "ablation_value", "series", "x", "fraction", "n_clean_subset", "epochs", "attack_epochs", "target",
                "before_clean_acc", "before_asr", "clean_acc", "asr", "n_clean", "n_asr", "train_seconds", "seconds",
                "device", "method_options", "extra", "finished_at"]


def write_reports(rows: Sequence[Mapping[str, Any]], out_dir: str | Path, *, title: str | None = None) -> dict[str, Path]:
    """Write ``results.csv``, ``table.md`` and ``comparison.html`` for ``rows`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "table": out / "table.md", "figure": out / "comparison.html"}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (json.dumps(r.get(k), sort_keys=True) if isinstance(r.get(k), (dict, list)) else r.get(k))
                             for k in _CSV_COLUMNS})
    paths["table"].write_text(format_table(rows, title=title))
    comparison_figure(rows, title=title).write_html(paths["figure"], include_plotlyjs=True, full_html=True)
    return paths
