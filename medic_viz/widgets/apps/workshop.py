"""The workshop's six exercises as one page without code (``medic-viz serve``'s second page).

A thin view over :class:`medic_viz.workshop.WorkshopExercises`: each exercise shows what is
needed to answer it (counts, Figure 2, the explorer, the ranking, the launcher), an answer
widget and a Check button that shows the verdict (✅ / ❌ / ⏳) in one line.
"""

from __future__ import annotations

import html
from typing import Any, Callable

import ipywidgets as widgets
import plotly.graph_objects as go

from medic_viz.viz.analysis_figures import figure2_grid
from medic_viz.widgets.apps.common import error_html
from medic_viz.widgets.apps.explorer import ExplorerApp
from medic_viz.widgets.apps.launcher import LauncherApp
from medic_viz.widgets.state.explorer import ExplorerState
from medic_viz.widgets.state.launcher import LauncherState
from medic_viz.workshop import EXERCISES, REGIONS, TAUS, Verdict, WorkshopExercises

__all__ = ["WorkshopApp", "workshop_app"]


def _title(k: int) -> widgets.HTML:
    name, minutes = EXERCISES[k - 1]
    return widgets.HTML(f"<h3 style='margin:18px 0 4px 0'>Exercise {k} · {html.escape(name)} ({minutes} min)</h3>")


def _text(body: str) -> widgets.HTML:
    return widgets.HTML(f"<div style='max-width:900px'>{body}</div>")


class WorkshopApp(widgets.VBox):
    """The six exercises over ``exercises``; ``launcher``: the :class:`LauncherState` of
    exercises 5–6 (its ``queue`` shares the machine); ``fast``: short runs, exercise 5 not checked.

    Parts: ``answers`` (``{exercise: widget}``), ``check_buttons`` and ``verdicts``
    (``{exercise: Button / HTML}``), ``launcher_view``, ``explorer_view``.
    """

    def __init__(self, exercises: WorkshopExercises, launcher: LauncherState, *, fast: bool = False) -> None:
        self.exercises, self.launcher, self.fast = exercises, launcher, bool(fast)
        ex = exercises
        self.answers: dict[int, Any] = {}
        self.check_buttons: dict[int, widgets.Button] = {}
        self.verdicts: dict[int, widgets.HTML] = {}
        rows = "".join(f"<tr><td>{k}</td><td>{html.escape(n)}</td><td>{m} min</td></tr>"
                       for k, (n, m) in enumerate(EXERCISES, start=1))
        intro = _text("<h2>Workshop: find a backdoor, then remove it</h2>"
                      f"<p>Six exercises on a trojaned traffic-sign classifier: any sign carrying the trigger is "
                      f"sent to <b>{html.escape(ex.classes[ex.target])}</b>. Answer with the menus and boxes, "
                      "then press <b>Check</b>: ✅ your answer holds, ❌ it does not (with a hint), ⏳ not answered "
                      "yet. The workbench page has the same tools in one place.</p>"
                      f"<table><tr><th>#</th><th>exercise</th><th>time</th></tr>{rows}</table>")

        # 1 · the ASR from the counts
        n, counts = ex.triggered_counts()
        table = "".join(f"<tr><td>{html.escape(c)}</td><td style='text-align:right'>{k}</td></tr>"
                        for c, k in sorted(counts.items(), key=lambda kv: -kv[1]))
        self.answers[1] = widgets.Text(placeholder="e.g. 0.42", description="ASR", style={"description_width": "40px"})
        part1 = [_title(1), _text(
            "The <b>attack success rate</b> is the share of triggered test images, <i>whose true class is not the "
            f"target</i>, that the model classifies as the target. The trigger was put on the {n} test signs that "
            "are not the target; here is what the trojaned model says about them. What is the ASR?"),
            widgets.HTML(f"<table><tr><th>predicted class</th><th>signs</th></tr>{table}</table>"),
            self._answer_row(1, lambda: ex.check_asr(self.answers[1].value))]

        # 2 · the corner, from Figure 2
        fig2 = figure2_grid(ex.analysis, layers=["conv1", "conv2", "conv4"], tau=5.0)
        self.figure2 = go.FigureWidget(fig2)
        self.answers[2] = widgets.Dropdown(options=[("—", None)] + [(c, c) for c in REGIONS], value=None,
                                           description="where")
        part2 = [_title(2), _text(
            "The paper's Figure 2 for one sign and its triggered copy. Look at the <b>difference</b> column of the "
            "first convolution (<code>conv1</code>): where does the trigger change the activations most — in a "
            "corner, or in the centre, on the sign itself?"),
            self.figure2, self._answer_row(2, lambda: ex.check_corner(self.answers[2].value))]

        # 3 · τ and the spread of the importance
        self.explorer_view = ExplorerApp(ExplorerState(ex.analysis, layer="conv2", criteria="combined", tau=1.0),
                                         height=300)
        self.answers[3] = widgets.Dropdown(options=[("—", None)] + [(f"{t:g}", t) for t in TAUS], value=None,
                                           description="τ")
        part3 = [_title(3), _text(
            "MEDIC's importance is a softmax with temperature τ over a layer's neurons. Below, on layer "
            "<code>conv2</code> with the combined criterion, move τ and read over which share of the neurons the "
            f"importance is spread. What is the <b>smallest τ</b> of {', '.join(f'{t:g}' for t in TAUS)} that puts "
            "it on <b>less than 10%</b> of the neurons (clean sign)?"),
            self.explorer_view, self._answer_row(3, lambda: ex.check_tau(self.answers[3].value))]

        # 4 · the most compromised channel
        ranking = ex.ranking()[:12]
        rows4 = "".join(f"<tr><td>{r['rank']}</td><td>{html.escape(r['layer'])}</td><td>{r['channel']}</td>"
                        f"<td>{r['shift']:.2f}</td><td>{r['importance']:.2f}</td></tr>" for r in ranking)
        convs = sorted({r["layer"] for r in ex.ranking() if r["layer"].startswith("conv")})
        self.answers[4] = (widgets.Dropdown(options=[("—", None)] + [(c, c) for c in convs], value=None,
                                            description="layer"),
                           widgets.Text(placeholder="channel index", description="channel"))
        part4 = [_title(4), _text(
            "Every channel ranked by how far the trigger shifts it (in σ, averaged over test images), with its "
            "importance on clean inputs. Which <b>convolution</b> channel (a layer whose name starts with "
            "<code>conv</code>) does the trigger shift most? Is it important on clean inputs?"),
            widgets.HTML("<table><tr><th>rank</th><th>layer</th><th>channel</th><th>shift (σ)</th>"
                         f"<th>importance</th></tr>{rows4}</table>"),
            self._answer_row(4, lambda: ex.check_channel(self.answers[4][0].value, self.answers[4][1].value),
                             widgets.HBox(list(self.answers[4])))]

        # 5 · remove it, 6 · plain cloning
        self.launcher_view = LauncherApp(launcher, height=360, width=950)
        self.launcher_view.device.options = [launcher.device]
        self.launcher_view.device.disabled = True
        part5 = [_title(5), _text(
            "Find settings — τ calibrated per layer to a share (the default) or one global τ, and λ — such that the "
            "repaired model has <b>ASR ≤ 10%</b> and <b>clean accuracy ≥ 90%</b> on the whole test set. Runs are "
            "overlaid; the machine is shared, so a run may wait for its turn (the line under the buttons says "
            "where it stands). The check looks at all your finished runs."),
            self.launcher_view,
            self._answer_row(5, lambda: ex.check_removal(launcher.runs, fast=self.fast), widgets.HTML())]
        self.answers[6] = widgets.Dropdown(options=[("—", None), ("yes", True), ("no", False)], value=None,
                                           description="removed?")
        part6 = [_title(6), _text(
            "With τ = 0 every neuron weighs the same: plain cloning of <i>all</i> the teacher's activations, "
            "compromised ones included. Launch a run with the defaults (<i>τ per layer</i>) if you have none yet, then "
            "one that differs only in τ: choose <i>one global τ</i>, set τ = 0, keep λ, Launch. Does plain cloning "
            "remove the backdoor (ASR ≤ 10%)? Compare the two ASR curves: does MEDIC's importance matter on this "
            "model? (On this polygon model the trigger sits on the sign, where clean signs have their features too; "
            "on the BadNet model, in a corner of the background, plain cloning does remove the backdoor.)"),
            self._answer_row(6, lambda: ex.check_plain_cloning(self.answers[6].value, launcher.runs))]
        super().__init__([intro, *part1, *part2, *part3, *part4, *part5, *part6])
        self.add_class("medic-workshop")

    def _answer_row(self, k: int, check: Callable[[], Verdict], answer: widgets.Widget | None = None) -> widgets.Box:
        button = widgets.Button(description="Check", icon="check", button_style="primary")
        verdict = widgets.HTML()

        def on_click(_b: Any) -> None:
            try:
                verdict.value = html.escape(check().text)
            except Exception as exc:  # noqa: BLE001 - an answer the check cannot read: shown, never raised into the page
                verdict.value = error_html(f"{type(exc).__name__}: {exc}")

        button.on_click(on_click)
        self.check_buttons[k], self.verdicts[k] = button, verdict
        row = widgets.HBox([answer if answer is not None else self.answers[k], button, verdict])
        row.add_class(f"medic-exercise-{k}")
        return row

    def check(self, k: int) -> str:
        """Press exercise ``k``'s Check button; returns the verdict shown."""
        self.check_buttons[k].click()
        return self.verdicts[k].value


def workshop_app(exercises: WorkshopExercises, launcher: LauncherState, *, fast: bool = False) -> WorkshopApp:
    """The workshop page (see :class:`WorkshopApp`)."""
    return WorkshopApp(exercises, launcher, fast=fast)
