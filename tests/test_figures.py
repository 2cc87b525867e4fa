"""Each figure's content: traces, shapes, values, shared colour scales, hover text, export."""

import warnings

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
import torch.nn as nn

from medic_viz.analysis import (
    analyze_input,
    compromised_importance_statistic,
    rank_compromised_neurons,
    top_activating_images,
)
from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.attribution import compare_attributions
from medic_viz.capture import run_with_cache
from medic_viz.importance import RunningStats
from medic_viz.viz import grid_curves_figure
from medic_viz.viz.analysis_figures import (
    FIGURE2_COLUMNS,
    attribution_figure,
    figure2_grid,
    layer_strip,
    neuron_ranking_figure,
    top_activating_figure,
)
from medic_viz.viz.export import export_figure
from medic_viz.viz.style import PALETTE, REFERENCE_COLOR
from medic_viz.viz.summary_figures import (
    aggregate_rows,
    data_amount_figure,
    defense_comparison_figure,
    lambda_tau_figure,
    removal_accuracy_figure,
    tau_panels_figure,
    tau_sweep_figure,
    tradeoff_figure,
)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, stride=2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.conv2(torch.relu(self.bn1(self.conv1(x)))).mean((2, 3)))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.rand(12, 3, 8, 8)
    cache = run_with_cache(model, x)
    stats = {}
    for n in cache:
        rs = RunningStats()
        rs.update(cache[n])
        stats[n] = rs.finish()
    trigger = BadNetTrigger(size=3)
    analysis = analyze_input(model, x[0], trigger, 2, stats=stats, class_names=["a", "b", "c"])
    return model, x, stats, trigger, analysis


def _heatmaps(fig):
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def test_figure2_grid_content(setup):
    *_, an = setup
    fig = figure2_grid(an, ["conv1", "conv2", "fc"], tau=3.0, reduction="mean_abs")
    images = [t for t in fig.data if isinstance(t, go.Image)]
    heat = _heatmaps(fig)
    assert len(images) == 2 and len(heat) == 4 * 3  # images in the first row only
    # the clean input image is the analysed image, as uint8 RGB
    np.testing.assert_array_equal(images[0].z, (an.image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    titles = [a.text for a in fig.layout.annotations]
    assert all(c in titles for c in FIGURE2_COLUMNS)
    for r, layer in enumerate(["conv1", "conv2", "fc"]):
        clean, trig, diff, imp = heat[4 * r : 4 * r + 4]
        m = an.maps(layer, 3.0, "mean_abs")
        np.testing.assert_allclose(np.asarray(clean.z), m["clean"])
        np.testing.assert_allclose(np.asarray(diff.z), m["difference"])
        np.testing.assert_allclose(np.asarray(imp.z), m["combined"])
        # clean and triggered activations share one colour axis spanning both maps
        assert clean.coloraxis == trig.coloraxis and clean.coloraxis != diff.coloraxis
        ax = fig.layout[clean.coloraxis]
        assert ax.cmin == pytest.approx(min(m["clean"].min(), m["triggered"].min()))
        assert ax.cmax == pytest.approx(max(m["clean"].max(), m["triggered"].max()))
        assert "value %{z" in clean.hovertemplate and layer in clean.name
    assert np.asarray(heat[8].z).shape == (1, 3)  # the linear layer is a 1 x F strip
    p = an.predictions
    assert fig.layout.title.text.startswith(f"Clean → {'abc'[p['clean'].label]} ({p['clean'].probability:.0%})")
    # a different τ changes only the importance column
    fig5 = figure2_grid(an, ["conv1"], tau=5.0)
    h3, h5 = _heatmaps(figure2_grid(an, ["conv1"], tau=3.0)), _heatmaps(fig5)
    np.testing.assert_array_equal(np.asarray(h3[2].z), np.asarray(h5[2].z))
    assert not np.allclose(np.asarray(h3[3].z), np.asarray(h5[3].z))


def test_figure2_signed_reduction_uses_a_centred_diverging_scale(setup):
    *_, an = setup
    fig = figure2_grid(an, "conv1", tau=1.0, reduction="mean")
    diff = _heatmaps(fig)[2]
    ax = fig.layout[diff.coloraxis]
    assert ax.cmin == pytest.approx(-ax.cmax) and ax.cmax > 0


def test_layer_strip_content(setup):
    *_, an = setup
    fig = layer_strip(an, 2.0)
    heat = _heatmaps(fig)
    assert len(heat) == 2 * len(an.layers)
    for i, layer in enumerate(an.layers):
        m = an.maps(layer, 2.0)
        np.testing.assert_allclose(np.asarray(heat[2 * i].z), m["difference"])
        np.testing.assert_allclose(np.asarray(heat[2 * i + 1].z), m["combined"])


def test_neuron_ranking_figure_content(setup):
    model, x, stats, trigger, _ = setup
    ranking = rank_compromised_neurons(model, x, trigger, stats=stats, labels=torch.zeros(12, dtype=torch.long))
    fig = neuron_ranking_figure(ranking, top_n=5)
    bar = fig.data[0]
    top = ranking.top(5)
    np.testing.assert_allclose(bar.x, top.shift)
    assert list(bar.y) == [f"{layer} · ch {c}" for layer, c in zip(top.layer, top.channel)]
    scatters = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert sum(len(t.x) for t in scatters) == len(ranking)
    red = [t for t in scatters if t.name == "top 5"][0]
    np.testing.assert_allclose(sorted(red.x), sorted(np.abs(top.shift)))
    assert fig.layout.yaxis2.type == "log"
    assert any(s.y0 == 1.0 and s.y1 == 1.0 for s in fig.layout.shapes)  # layer-average line
    # with the statistic: a third panel, one bar per layer with selected units, at its percentile
    stat = compromised_importance_statistic(ranking, level="neuron", min_shift=0.01)
    fig3 = neuron_ranking_figure(ranking, top_n=5, statistic=stat)
    pct = [t for t in fig3.data if t.name == "percentile"][0]
    per = [d for d in stat.per_layer if d["k"]]
    np.testing.assert_allclose(pct.x, [100 * d["percentile"] for d in per])
    assert list(pct.y) == [d["layer"] for d in per] and pct.xaxis == "x3"
    assert any(s.x0 == 50 and s.x1 == 50 for s in fig3.layout.shapes)


ROWS = [
    {"tau": 0, "seed": 0, "clean_acc": 0.90, "asr": 0.80, "criteria": "both", "lam": 10, "method": "medic", "attack": "badnet"},
    {"tau": 0, "seed": 1, "clean_acc": 0.92, "asr": 0.90, "criteria": "both", "lam": 10, "method": "medic", "attack": "badnet"},
    {"tau": 5, "seed": 0, "clean_acc": 0.86, "asr": 0.10, "criteria": "both", "lam": 10, "method": "medic", "attack": "badnet"},
    {"tau": 5, "seed": 1, "clean_acc": 0.88, "asr": 0.20, "criteria": "both", "lam": 10, "method": "medic", "attack": "badnet"},
    {"tau": 5, "seed": 0, "clean_acc": 0.80, "asr": 0.50, "criteria": "activation", "lam": 1, "method": "finetune",
     "attack": "sig"},
]


def test_aggregate_rows_by_hand():
    agg = aggregate_rows(ROWS[:4], ["tau"])
    assert [r["tau"] for r in agg] == [0, 5]
    # sample std (ddof=1), the one definition of the package: std(0.90, 0.92) = 0.02 / sqrt(2)
    assert agg[0]["clean_acc"] == pytest.approx(0.91) and agg[0]["clean_acc_std"] == pytest.approx(0.0141421356)
    assert agg[1]["asr"] == pytest.approx(0.15) and agg[1]["asr_std"] == pytest.approx(0.0707106781) and agg[1]["n"] == 2


def test_tau_sweep_figure_values_and_bands():
    fig = tau_sweep_figure(ROWS[:4])
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    bands = [t for t in fig.data if t.fill == "toself"]
    acc = [t for t in lines if "clean accuracy" in t.name][0]
    asr = [t for t in lines if t.name == "ASR"][0]
    np.testing.assert_allclose(acc.x, [0, 5])
    np.testing.assert_allclose(acc.y, [91.0, 87.0])
    np.testing.assert_allclose(asr.y, [85.0, 15.0])
    assert asr.line.dash == "dash" and len(bands) == 2
    asr_band = [b for b in bands if b.legendgroup == "ASR"][0]
    s = 10 / np.sqrt(2)  # sample std of (0.8, 0.9) and of (0.1, 0.2), in %
    np.testing.assert_allclose(asr_band.y, [85 + s, 15 + s, 15 - s, 85 - s])  # mean ± std, out and back
    grouped = tau_sweep_figure(ROWS, group_by="criteria")
    assert {t.name for t in grouped.data if t.mode == "lines+markers"} == {
        "both: clean accuracy", "both: ASR", "activation: clean accuracy", "activation: ASR"}
    with pytest.raises(ValueError, match="asr"):
        tau_sweep_figure([{"tau": 1, "clean_acc": 0.5}])


def test_tau_panels_figure_puts_each_series_in_its_panel_with_the_default_as_its_own_point():
    rows = [{"series": s, "tau": tau, "seed": seed, "clean_acc": acc, "asr": asr}
            for s, tau, seed, acc, asr in (("sig", 0.0, 0, 0.97, 0.90), ("sig", 0.0, 1, 0.95, 0.70),
                                           ("sig", 3.0, 0, 0.96, 0.10), ("sig", None, 0, 0.94, 0.02),
                                           ("sig", None, 1, 0.96, 0.04), ("badnet", 0.0, 0, 0.98, 0.01))]
    fig = tau_panels_figure(rows, columns=3)
    assert [a.text for a in fig.layout.annotations] == ["sig", "badnet"]
    sig_acc = [t for t in fig.data if t.mode == "lines+markers" and t.name == "clean accuracy" and t.xaxis == "x"][0]
    np.testing.assert_allclose(sig_acc.x, [0, 3]) and np.testing.assert_allclose(sig_acc.y, [96.0, 96.0])
    default_asr = [t for t in fig.data if t.name == "ASR, default" and t.xaxis == "x"][0]
    np.testing.assert_allclose(default_asr.y, [3.0])  # mean(2, 4) %, ± sample std sqrt(2)
    np.testing.assert_allclose(default_asr.error_y.array, [np.sqrt(2)])
    assert default_asr.x[0] > 3 and list(fig.layout.xaxis.ticktext) == ["0", "3", "default"]
    assert list(fig.layout.xaxis2.ticktext) == ["0", "3"]  # badnet has no default point
    shown = [t.name for t in fig.data if t.showlegend]
    assert shown == ["clean accuracy", "clean accuracy, default", "ASR", "ASR, default"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert bands and all(t.mode == "lines" for t in bands)  # a band is an area: no markers on its outline
    with pytest.raises(ValueError, match="columns"):
        tau_panels_figure(rows, columns=0)


def test_data_amount_figure_draws_one_panel_per_attack_one_colour_per_method_on_a_log_axis():
    rows = [{"attack": a, "method": m, "percent": p, "seed": seed, "clean_acc": acc, "asr": asr}
            for a, m, p, seed, acc, asr in (("sig", "MEDIC", 1, 0, 0.80, 0.02), ("sig", "MEDIC", 1, 1, 0.84, 0.04),
                                            ("sig", "MEDIC", 5, 0, 0.96, 0.01), ("sig", "KD", 5, 0, 0.92, 0.05),
                                            ("badnet", "KD", 2, 0, 0.50, 0.10))]
    fig = data_amount_figure(rows)
    assert [a.text for a in fig.layout.annotations] == ["sig", "badnet"]
    medic_acc = [t for t in fig.data if t.name == "MEDIC: clean accuracy" and t.mode == "lines+markers"][0]
    np.testing.assert_allclose(medic_acc.x, [1, 5]) and np.testing.assert_allclose(medic_acc.y, [82.0, 96.0])
    np.testing.assert_allclose(medic_acc.customdata, [100 * np.std([0.80, 0.84], ddof=1), 0.0])
    kd = [t for t in fig.data if t.name == "KD: ASR" and t.mode == "lines+markers"]
    assert [t.xaxis for t in kd] == ["x", "x2"] and kd[0].line.dash == "dash"
    assert kd[0].line.color != medic_acc.line.color  # colour tells the method apart
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.ticktext) == ["1", "2", "5"]
    assert [t.name for t in fig.data if t.showlegend] == ["MEDIC: clean accuracy", "MEDIC: ASR",
                                                          "KD: clean accuracy", "KD: ASR"]
    with pytest.raises(ValueError, match="percent must be > 0"):
        data_amount_figure([dict(rows[0], percent=0)])
    with pytest.raises(ValueError, match="lacks"):
        data_amount_figure([{"attack": "sig", "method": "KD", "clean_acc": 0.9, "asr": 0.1}])


def test_lambda_tau_figure_lines_and_heatmap():
    fig = lambda_tau_figure(ROWS)
    by_name: dict[str, list] = {}
    for t in fig.data:
        by_name.setdefault(t.name, []).append(t)
    assert set(by_name) == {"λ=1", "λ=10"}
    asr10, acc10 = by_name["λ=10"]
    np.testing.assert_allclose(asr10.x, [0, 5])
    np.testing.assert_allclose(asr10.y, [85.0, 15.0])
    np.testing.assert_allclose(asr10.error_y.array, [10 / np.sqrt(2)] * 2)  # sample std, in %
    np.testing.assert_allclose(acc10.y, [91.0, 87.0])
    heat = lambda_tau_figure(ROWS, kind="heatmap")
    asr_map = np.asarray(heat.data[0].z, dtype=float)
    assert list(heat.data[0].y) == ["1", "10"] and list(heat.data[0].x) == ["0", "5"]
    np.testing.assert_allclose(asr_map[1], [85.0, 15.0])
    assert np.isnan(asr_map[0, 0]) and asr_map[0, 1] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="kind"):
        lambda_tau_figure(ROWS, kind="surface")


def test_tradeoff_figure_content():
    fig = tradeoff_figure(ROWS)
    both = [t for t in fig.data if t.name == "both"][0]
    np.testing.assert_allclose(both.x, [91.0, 87.0])
    np.testing.assert_allclose(both.y, [85.0, 15.0])
    assert list(both.text) == ["τ=0", "τ=5"]
    np.testing.assert_allclose(both.error_y.array, [10 / np.sqrt(2)] * 2)  # sample std, in %
    assert fig.layout.xaxis.title.text.startswith("clean accuracy")


def test_defense_comparison_figure_content():
    fig = defense_comparison_figure(ROWS)
    assert fig.layout.barmode == "group"
    bars = {(t.name, t.yaxis): t for t in fig.data}
    medic_acc = bars[("medic", "y")]
    assert list(medic_acc.x) == ["badnet", "sig"]
    assert medic_acc.y[0] == pytest.approx(89.0) and medic_acc.y[1] is None
    medic_asr = bars[("medic", "y2")]
    assert medic_asr.y[0] == pytest.approx(50.0)
    assert medic_asr.error_y.array[0] == pytest.approx(100 * np.std([0.8, 0.9, 0.1, 0.2], ddof=1))
    assert bars[("finetune", "y2")].y[1] == pytest.approx(50.0)
    assert sum(1 for t in fig.data if t.showlegend) == 2


def test_defense_comparison_colours_the_original_grey_and_every_method_apart():
    """Nine series (the trojaned model and eight methods, as in Table 1): with eight palette
    colours the ninth used to repeat the first, so MEDIC looked like the original model."""
    names = ["Original", "Fine-tuning", "Fine-pruning", "NAD", "MCR", "ANP", "KD", "Scratch", "MEDIC"]
    rows = [{"attack": "badnet", "variant": n, "clean_acc": 0.9, "asr": 0.1} for n in names]
    fig = defense_comparison_figure(rows, group_by="variant")
    colours = {t.name: t.marker.color for t in fig.data if t.yaxis == "y"}
    assert colours["Original"] == REFERENCE_COLOR and len(set(colours.values())) == 9
    assert [colours[n] for n in names[1:]] == list(PALETTE)


def test_attribution_figure_content(setup):
    model, x, _, trigger, _ = setup
    cmp = compare_attributions(model, x[1], trigger, methods=("saliency", "gradcam"), n_steps=4)
    fig = attribution_figure(cmp)
    heat = _heatmaps(fig)
    assert len(heat) == 4 and len([t for t in fig.data if isinstance(t, go.Image)]) == 4
    np.testing.assert_allclose(np.asarray(heat[1].z), cmp.maps["saliency"]["triggered"])
    assert heat[0].coloraxis == heat[1].coloraxis != heat[2].coloraxis
    # the trigger outline: bottom-right 3x3 with margin 1 in an 8x8 image -> pixels 4..6
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 4
    assert (rects[0].x0, rects[0].x1, rects[0].y0, rects[0].y1) == (3.5, 6.5, 3.5, 6.5)
    assert any("in trigger" in a.text for a in fig.layout.annotations)


def test_export_writes_html_and_skips_png_with_a_warning(tmp_path, monkeypatch):
    fig = tradeoff_figure(ROWS)

    def broken(*a, **k):
        raise RuntimeError("no browser here")

    monkeypatch.setattr(go.Figure, "to_image", broken)
    with pytest.warns(RuntimeWarning, match="no browser here"):
        paths = export_figure(fig, tmp_path / "sub" / "trade")
    assert paths == [tmp_path / "sub" / "trade.html"]
    html = paths[0].read_text()
    assert '"type":"scatter"' in html and "cdn.plot.ly" in html  # plotly.js from the CDN keeps it small


def test_export_writes_png_when_a_renderer_works(tmp_path, monkeypatch):
    monkeypatch.setattr(go.Figure, "to_image", lambda self, **k: b"\x89PNG fake")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = export_figure(tradeoff_figure(ROWS), tmp_path / "trade.png")
    assert [p.name for p in paths] == ["trade.html", "trade.png"]
    assert paths[1].read_bytes() == b"\x89PNG fake"
    with pytest.raises(TypeError, match="go.Figure"):
        export_figure({"data": []}, tmp_path / "x")


def test_top_activating_figure_content(setup):
    model, x, _, trigger, _ = setup
    top = top_activating_images(model, x, trigger, "conv2", 1, k=3)
    fig = top_activating_figure(top, "conv2", 1)
    images = [t for t in fig.data if isinstance(t, go.Image)]
    assert len(images) == 6
    want = (top["triggered"]["images"][0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(images[3].z, want)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0] == f"clean #{int(top['clean']['indices'][0])}: {top['clean']['values'][0]:.3g}"


def test_grid_curves_figure_panels_traces_and_values():
    def row(attack, seed, accs, asrs):
        return {"attack": attack, "seed": seed,
                "curve": [{"epoch": e, "clean_acc": a, "asr": s} for e, (a, s) in enumerate(zip(accs, asrs))]}

    rows = [row("badnet", 0, [0.9, 0.5, 0.8], [1.0, 0.2, 0.05]), row("badnet", 1, [0.9, 0.6, 0.85], [1.0, 0.1, 0.0]),
            row("sig", 0, [0.95, 0.9, 0.9], [0.98, 0.5, None]), {"attack": "sig", "seed": 1}]  # no curve: skipped
    fig = grid_curves_figure(rows)
    assert [a.text for a in fig.layout.annotations][:2] == ["badnet", "sig"]
    scatters = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len(scatters) == 6  # 3 runs x (accuracy, ASR)
    acc, asr = scatters[0], scatters[1]
    assert list(acc.y) == pytest.approx([90, 50, 80]) and list(asr.y) == pytest.approx([100, 20, 5])
    assert asr.line.dash == "dash" and acc.line.color == asr.line.color != scatters[2].line.color
    assert list(scatters[5].x) == [0, 1]  # the missing ASR point is left out, not drawn as 0
    assert [t.showlegend for t in scatters] == [True, True, True, True, False, False]
    with pytest.raises(ValueError, match="no row has a per-epoch"):
        grid_curves_figure([{"attack": "sig", "seed": 0}])


def _drop_rows() -> list[dict]:
    """Two attacks × two defences; teachers at 90 % clean / 100 % ASR. X: two seeds per attack
    (accuracy drops 2, 4 and 0, 2 points; ASR drops 90, 70 and 100, 80); Y: one seed each."""
    runs = [("X", "a", 0, 0.88, 0.10), ("X", "a", 1, 0.86, 0.30), ("X", "b", 0, 0.90, 0.00), ("X", "b", 1, 0.88, 0.20),
            ("Y", "a", 0, 0.80, 0.00), ("Y", "b", 0, 0.85, 0.50)]
    return [{"variant": v, "method": v.lower(), "attack": a, "seed": s, "teacher_id": f"t-{a}",
             "before_clean_acc": 0.9, "before_asr": 1.0, "clean_acc": acc, "asr": asr} for v, a, s, acc, asr in runs]


def test_removal_accuracy_figure_puts_each_defence_at_its_average_drops_with_welch_intervals():
    fig = removal_accuracy_figure(_drop_rows())
    main = {t.name: t for t in fig.data if t.showlegend is not False}
    x = main["X"]
    assert x.x[0] == pytest.approx(2.0) and x.y[0] == pytest.approx(85.0)
    # by hand: both attacks' drops have sample std √2 (accuracy) and √200 (ASR) over 2 seeds, so
    # SE = √(2·v)/2 with v = s²/2, Welch df = 2, t(0.975, 2) = 4.302653
    assert x.error_y.array[0] == pytest.approx(4.302653 * np.sqrt(200) / 2, rel=1e-5)
    assert x.error_y.arrayminus[0] == pytest.approx(x.error_y.array[0])
    assert x.error_x.array[0] == pytest.approx(4.302653 * np.sqrt(2) / 2, rel=1e-5)
    y = main["Y"]  # one seed per attack: no spread, no interval drawn
    assert y.x[0] == pytest.approx(7.5) and y.y[0] == pytest.approx(75.0) and not y.error_y.visible
    per_attack = [t for t in fig.data if t.name == "X: per attack"][0]
    np.testing.assert_allclose(per_attack.x, [3.0, 1.0])
    np.testing.assert_allclose(per_attack.y, [80.0, 90.0])
    assert list(per_attack.text) == ["a", "b"]
    assert x.marker.color != y.marker.color


def test_removal_accuracy_figure_refuses_rows_without_the_numbers():
    with pytest.raises(ValueError, match="lacks"):
        removal_accuracy_figure([{"attack": "a", "variant": "X", "clean_acc": 0.9}])


def test_export_tries_a_failed_png_render_once_more(tmp_path, monkeypatch):
    """kaleido's browser fails now and then on a busy machine (a JavascriptError in
    table1_report's figures): one failure no longer costs the PNG."""
    calls = []

    def flaky(self, **k):
        calls.append(k)
        if len(calls) == 1:
            raise RuntimeError("JavascriptError")
        return b"\x89PNG second try"

    monkeypatch.setattr(go.Figure, "to_image", flaky)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = export_figure(tradeoff_figure(ROWS), tmp_path / "trade")
    assert [p.name for p in paths] == ["trade.html", "trade.png"] and len(calls) == 2
    assert paths[1].read_bytes() == b"\x89PNG second try"


def test_removal_accuracy_figure_tells_nine_defences_apart():
    """Table 1 has nine columns (eight methods and the aligned MEDIC row) and the palette eight
    colours: the ninth must still differ from the first (by its marker)."""
    rows = [dict(r, variant=f"M{i}") for i in range(9) for r in _drop_rows()[:1]]
    looks = {(t.marker.color, t.marker.symbol) for t in removal_accuracy_figure(rows).data if t.showlegend is not False}
    assert len(looks) == 9
