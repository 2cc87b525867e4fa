"""The workshop's exercises (``notebooks/05_workshop.ipynb``) as checks a page can run without code.

:class:`WorkshopExercises` holds the trojaned model, its data, trigger and target, and answers
each exercise with a :class:`Verdict` (``ok``: True ✅, False ❌, None ⏳ not answered / nothing
to check yet; ``message``: one line). ``medic-viz serve``'s workshop page
(:mod:`medic_viz.widgets.apps.workshop`) asks for answers with menus and boxes and shows the
verdicts; everything a participant needs to answer is shown on the page (counts, maps, rankings).
The workshop opens on the Polygon demo model (:data:`DEFAULT_MODEL`), on which plain cloning
(τ = 0) keeps the backdoor and MEDIC's default removes it, so exercise 6 has something to show
(BENCHMARKS.md, "Does importance matter?"); on the BadNet model (the easy case) both remove it.

No Jupyter: the views read this, it never imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn as nn

from medic_viz.analysis import InputAnalysis, analyze_input, rank_compromised_neurons
from medic_viz.attacks.base import Trigger
from medic_viz.data import load_dataset
from medic_viz.data.arrays import DatasetSplits, clean_subset
from medic_viz.importance import effective_neurons
from medic_viz.metrics import predict
from medic_viz.pipeline import trigger_of
from medic_viz.pretrained import load_demo_model
from medic_viz.stats import LayerStats, compute_layer_stats

__all__ = ["CORNERS", "REGIONS", "TAUS", "DEFAULT_MODEL", "Verdict", "WorkshopExercises", "EXERCISES"]

#: The demo model the workshop opens on: plain cloning keeps its backdoor, MEDIC removes it.
DEFAULT_MODEL = "polygon"
CORNERS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
#: Exercise 2's answers: where a trigger changes the first convolution most.
REGIONS: tuple[str, ...] = (*CORNERS, "centre")
TAUS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
#: (title, minutes) of the six exercises, in order (the 90-minute plan of the README).
EXERCISES: tuple[tuple[str, int], ...] = (
    ("Measure the attack success rate", 10),
    ("Where does the trigger act?", 10),
    ("τ concentrates the importance", 15),
    ("The most compromised channel", 15),
    ("Remove the backdoor", 25),
    ("Does importance matter? Plain cloning (τ = 0)", 10),
)


@dataclass(frozen=True)
class Verdict:
    """``ok``: True (the answer holds), False (it does not; the message hints), None (not answered
    or nothing to check yet)."""

    ok: bool | None
    message: str

    @property
    def text(self) -> str:
        return {True: "✅ ", False: "❌ ", None: "⏳ "}[self.ok] + self.message


def _region_of(diff_map: Any) -> str:
    """Where a map is largest: ``"centre"`` (the middle half of both sides), else its corner."""
    h, w = diff_map.shape
    r, c = divmod(int(diff_map.argmax()), w)
    if h / 4 <= r < 3 * h / 4 and w / 4 <= c < 3 * w / 4:
        return "centre"
    return ("top" if r < h / 2 else "bottom") + "-" + ("left" if c < w / 2 else "right")


class WorkshopExercises:
    """The six exercises on ``teacher`` (trojaned with ``trigger`` → ``target``) and ``splits``;
    ``images``: test images used to rank channels (exercise 4); ``fraction``: the defender's
    clean share (statistics). Heavy pieces (statistics, the analysed sign, the ranking) are
    computed on first use and kept."""

    def __init__(self, teacher: nn.Module, splits: DatasetSplits, trigger: Trigger, target: int, *,
                 images: int = 1000, fraction: float = 0.05, device: str = "cpu") -> None:
        if trigger is None or target is None:
            raise ValueError("the workshop needs a model whose card records its trigger and target")
        self.teacher, self.splits, self.trigger, self.target = teacher.eval(), splits, trigger, int(target)
        self.images, self.fraction, self.device = int(images), float(fraction), device
        self._stats: dict[str, LayerStats] | None = None
        self._analysis: InputAnalysis | None = None
        self._ranking: list[dict] | None = None
        self._asr = None

    @classmethod
    def from_demo(cls, name: str = DEFAULT_MODEL, **kw: Any) -> "WorkshopExercises":
        teacher, card = load_demo_model(name)
        trigger, target = trigger_of(card)  # None, None for a card without an attack: __init__ says so
        return cls(teacher, load_dataset(card.dataset or "signs", size=card.input_size), cast(Trigger, trigger),
                   cast(int, target), **kw)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.splits.classes)

    # -- what the page shows -----------------------------------------------------------------
    def triggered_counts(self) -> tuple[int, dict[str, int]]:
        """Exercise 1's data: the test images whose true class is not the target, with the
        trigger applied: ``(how many, {predicted class: count})``."""
        keep = self.splits.test.labels != self.target
        preds = predict(self.teacher, self.trigger.apply(self.splits.test.floats()[keep]))
        counts = torch.bincount(preds, minlength=len(self.classes))
        return int(keep.sum()), {self.classes[k]: int(n) for k, n in enumerate(counts) if int(n)}

    @property
    def stats(self) -> dict[str, LayerStats]:
        if self._stats is None:
            self._stats = compute_layer_stats(self.teacher, clean_subset(self.splits.train, self.fraction),
                                              device=self.device)
        return self._stats

    @property
    def analysis(self) -> InputAnalysis:
        """Exercises 2–3: the paper's Figure-2 analysis of the first test sign that is not the target."""
        if self._analysis is None:
            i = int((self.splits.test.labels != self.target).nonzero()[0])
            self._analysis = analyze_input(self.teacher, self.splits.test.floats(torch.tensor([i]))[0], self.trigger,
                                           int(self.splits.test.labels[i]), stats=self.stats,
                                           class_names=self.splits.classes)
        return self._analysis

    def ranking(self) -> list[dict]:
        """Exercise 4's data: every channel ranked by the trigger's shift (records, rank 1 first)."""
        if self._ranking is None:
            images = self.splits.test.subset(torch.arange(min(self.images, len(self.splits.test))))
            ranking = rank_compromised_neurons(self.teacher, images, self.trigger, stats=self.stats,
                                               exclude_label=self.target, tau=5.0)
            self._ranking = sorted(ranking.as_records(), key=lambda r: r["rank"])
        return self._ranking

    # -- the checks ----------------------------------------------------------------------------
    def check_asr(self, answer: Any) -> Verdict:
        if answer is None or str(answer).strip() == "":
            return Verdict(None, "not answered yet: type the ASR as a number in [0, 1] (or a percentage)")
        try:
            value = float(str(answer).strip().rstrip("%"))
        except ValueError:
            return Verdict(False, f"{str(answer)[:40]!r} is not a number: type e.g. 0.42")
        if value > 1 or str(answer).strip().endswith("%"):
            value /= 100.0
        n, counts = self.triggered_counts()
        truth = counts.get(self.classes[self.target], 0) / max(n, 1)
        if abs(value - truth) < 0.005:
            return Verdict(True, f"ASR {truth:.2%}: that is it, on {n} triggered signs whose true class is not "
                                 f"{self.classes[self.target]!r}.")
        return Verdict(False, f"{value:.2%} is not the ASR: divide the triggered signs predicted as the target "
                              f"({self.classes[self.target]!r}) by all {n} of them.")

    def check_corner(self, answer: str | None) -> Verdict:
        """Exercise 2: where (a corner, or the centre) the trigger changes conv1 most."""
        if not answer:
            return Verdict(None, "not answered yet: choose a corner or the centre")
        if answer not in REGIONS:
            return Verdict(False, f"answer one of {', '.join(REGIONS)}")
        truth = _region_of(self.analysis.maps("conv1", 5.0)["difference"])
        if answer == truth:
            where = "centre" if truth == "centre" else f"{truth} corner"
            return Verdict(True, f"yes: conv1's activations change most in the {where}.")
        return Verdict(False, "look again at the largest values of conv1's difference map (row 0 is the top).")

    def smallest_concentrating_tau(self, layer: str = "conv2", below: float = 0.10) -> float | None:
        for tau in TAUS:
            if self.spread(tau, layer) < below:
                return tau
        return None

    def spread(self, tau: float, layer: str = "conv2") -> float:
        """Exercise 3: the share of ``layer``'s neurons MEDIC's combined importance is spread over
        at ``tau`` on the analysed clean sign (1 = uniform; the explorer's effective fraction)."""
        w = self.analysis.importance(float(tau), "both", which="clean", layers=[layer])[layer]
        return float(effective_neurons(w.unsqueeze(0))[0]) / w.numel()

    def check_tau(self, answer: Any) -> Verdict:
        if answer is None:
            return Verdict(None, "not answered yet: choose a τ")
        truth = self.smallest_concentrating_tau()
        if float(answer) == truth:
            return Verdict(True, f"τ = {truth:g} is the smallest that puts the weight on < 10% of conv2's neurons.")
        return Verdict(False, f"τ = {float(answer):g} is not it: try every τ in order and read the spread.")

    def check_channel(self, layer: str | None, channel: Any) -> Verdict:
        if not layer or channel is None or str(channel).strip() == "":
            return Verdict(None, "not answered yet: choose a layer and type a channel index")
        try:
            answer = (str(layer), int(str(channel).strip()))
        except ValueError:
            return Verdict(False, f"{str(channel)[:20]!r} is not a channel index: type a whole number")
        best = next(r for r in self.ranking() if r["layer"].startswith("conv"))
        truth = (best["layer"], int(best["channel"]))
        if answer == truth:
            return Verdict(True, f"{truth}: shifted by {best['shift']:.2f} σ on average.")
        return Verdict(False, f"{answer} is not the most shifted convolution channel; keep layers whose name "
                              "starts with 'conv' and take the smallest rank.")

    @staticmethod
    def check_removal(runs: list, *, fast: bool = False) -> Verdict:
        """Exercise 5: a finished run with ASR ≤ 10 % and clean accuracy ≥ 90 % on the whole test set."""
        done = [r for r in runs if r.after is not None]
        if not done:
            return Verdict(None, "no finished run yet: press Launch above and wait for it to finish")
        if fast:
            return Verdict(None, "short runs (fast settings): too short to remove the backdoor; not checked")
        good = [r for r in done if r.after.asr is not None and r.after.asr <= 0.10 and r.after.clean_acc >= 0.90]
        if good:
            return Verdict(True, f"{good[0].label}: {good[0].after}")
        best = min(done, key=lambda r: r.after.asr if r.after.asr is not None else 1.0)
        return Verdict(False, f"not yet: your best run ({best.label}) has {best.after}. Sharper weights (a smaller "
                              "share, or a larger global τ) remove more of the backdoor; a larger λ clones more.")

    @staticmethod
    def check_plain_cloning(answer: bool | None, runs: list) -> Verdict:
        """Exercise 6: whether the participant's own τ = 0 run removed the backdoor (ASR ≤ 10 %).
        On the Polygon demo it does not (the default does); on the BadNet demo it does."""
        if answer is None:
            return Verdict(None, "not answered yet: choose yes or no")
        mine = [r for r in runs if r.after is not None and r.params.get("tau_mode") == "global"
                and float(r.params.get("tau", -1)) == 0.0]
        if not mine:
            return Verdict(None, "launch a run with one global τ = 0 first (choose 'one global τ', τ = 0, Launch)")
        run = mine[-1]
        truth = run.after.asr is not None and run.after.asr <= 0.10
        default = [r for r in runs if r.after is not None and r.params.get("tau_mode") == "share"]
        versus = f"; your run with τ per layer (the default): {default[-1].after}" if default else ""
        if bool(answer) == truth:
            return Verdict(True, f"right: your τ = 0 run ends with {run.after}{versus}.")
        return Verdict(False, f"look at your τ = 0 run again: {run.after}.")
