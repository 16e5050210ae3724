"""Report figures as SVG text, ready to inline: no image files, no fonts or scripts to fetch.

Figures are built on `matplotlib.figure.Figure` directly rather than pyplot, so no GUI backend or
global figure registry is involved and nothing stays open after rendering.
"""

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axis import Axis
from matplotlib.category import StrCategoryFormatter
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FixedFormatter, Formatter, FuncFormatter
from matplotlib.typing import RcKeyType

from bench.report.compute import Fit, drawable
from bench.report.formatting import curve_label, is_perplexity
from bench.report.suite_data import SuiteData

Colour = tuple[float, float, float]

# Text stays text (smaller, selectable); the salt makes ids deterministic and distinct per figure.
_SVG_RC: dict[RcKeyType, str] = {"svg.fonttype": "none"}
# Runs per variant drawn as lines of their own (a seed's curve); means use every run. Thousands
# of lines would say no more and make a figure slow to draw, embed and print.
LINES_PER_VARIANT = 25
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


def palette(variants: Sequence[str]) -> dict[str, Colour]:
    """One colour per variant, the same in every figure."""
    return dict(zip(variants, sns.color_palette("colorblind", len(variants)), strict=True))


@contextmanager
def _style() -> Iterator[None]:
    """Seaborn's look at print size; rc values are read when artists are made, so draw inside."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        yield


def curve_figure(data: SuiteData, variants: Sequence[str], metric: str) -> str | None:
    """`metric` against training FLOPs: every seed thin, the mean over seeds thick.

    The mean is taken only at steps every seed of a variant recorded, so a seed that stopped
    early cannot bend it. None when no finished run recorded the curve.
    """
    rows = data.curves[data.curves["metric"] == metric]
    if rows.empty:
        return None
    rows = rows[drawable(rows["value"]) & drawable(rows["flops"])]
    colours = palette(variants)
    with _style():
        fig = Figure(figsize=(7.2, 3.4), layout="constrained")
        ax = fig.add_subplot()
        for variant in variants:
            own = rows[rows["variant"] == variant].sort_values("step")
            if own.empty:
                continue
            for _, run in _first_runs(own):
                ax.plot(run["flops"], run["value"], color=colours[variant], lw=0.8, alpha=0.45)
            n_runs = own["run_id"].nunique()
            per_step = own.groupby("step").agg(
                flops=("flops", "mean"), value=("value", "mean"), seeds=("run_id", "nunique")
            )
            common = per_step[per_step["seeds"] == n_runs]
            ax.plot(
                common["flops"],
                common["value"],
                color=colours[variant],
                lw=2.2,
                label=f"{variant} (mean of {n_runs}"
                + (f"; {LINES_PER_VARIANT} drawn thin)" if n_runs > LINES_PER_VARIANT else ")"),
            )
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel(curve_label(metric))
        ax.set_title(f"{curve_label(metric)} against compute (thin: each seed; thick: mean "
                     "over seeds)")
        ax.legend(loc="best", frameon=True)
        return to_svg(fig, salt=f"curve-{metric}")


def metric_figure(
    data: SuiteData, variants: Sequence[str], metrics: Sequence[str], summary: pd.DataFrame
) -> str | None:
    """Each key metric per variant: one point per seed, the mean with its 95% seed t-interval."""
    if not metrics:
        return None
    colours = palette(variants)
    ncols = min(len(metrics), 3)
    nrows = math.ceil(len(metrics) / ncols)
    width = min(7.2, 2.4 * ncols + 0.5 * max(len(variants) - 3, 0))
    with _style():
        fig = Figure(figsize=(width, 2.6 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, metric in zip(axes, metrics, strict=False):
            rows = data.finals[data.finals["metric"] == metric]
            rows = rows[drawable(rows["value"])]
            for i, variant in enumerate(variants):
                values = rows.loc[rows["variant"] == variant].sort_values("seed")["value"]
                # Seeds spread evenly across the slot: no overlap, and no randomness, so the
                # same index always draws the same figure.
                spread = 0.15 if len(values) > 1 else 0.0
                ax.scatter(
                    i + np.linspace(-spread, spread, len(values)),
                    values,
                    s=22,
                    alpha=0.85,
                    color=colours[variant],
                    edgecolors="white",
                    linewidths=0.5,
                    zorder=3,
                )
                est = summary.loc[(variant, metric)]
                if est["n"] == 0 or not drawable(est[["mean", "low", "high"]].fillna(0)).all():
                    continue
                err = (
                    None
                    if math.isnan(est["low"])
                    else [[est["mean"] - est["low"]], [est["high"] - est["mean"]]]
                )
                ax.errorbar(
                    [i + 0.3],
                    [est["mean"]],
                    yerr=err,
                    fmt="D",
                    color="black",
                    ms=4,
                    capsize=3,
                    lw=1.1,
                    zorder=5,
                )
            ax.set_xticks(range(len(variants)), list(variants))
            ax.set_xlim(-0.5, len(variants) - 0.5)
            if is_perplexity(metric) and len(rows) and (rows["value"] > 0).all():
                ax.set_yscale("log")  # perplexities span decades
            ax.set_title(metric + (" (log axis)" if ax.get_yscale() == "log" else ""))
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.tick_params(axis="x", labelrotation=30 if len(variants) > 3 else 0)
        for ax in axes[len(metrics) :]:
            ax.set_visible(False)
        return to_svg(fig, salt="metrics")


def _first_runs(rows: pd.DataFrame, by: str = "run_id") -> list[tuple[str, pd.DataFrame]]:
    """The rows of the first LINES_PER_VARIANT runs (by seed, then id), one frame per run; with
    `by="seed"` one frame per seed (a ladder's rungs of one seed draw one line)."""
    key = list(dict.fromkeys(["seed", by]))
    runs = rows[key].drop_duplicates().sort_values(key)
    chosen = runs[by].head(LINES_PER_VARIANT)
    return list(rows[rows[by].isin(chosen)].groupby(by))


def evaluation_curves_figure(data: SuiteData, variants: Sequence[str]) -> str | None:
    """Every evaluation curve (PR: precision against recall; ROC: TPR against false positives),
    one panel per curve, one colour per variant, one line per seed. None when there are none."""
    names = list(dict.fromkeys(data.points["curve"]))
    if not names:
        return None
    colours = palette(variants)
    ncols = min(len(names), 3)
    nrows = math.ceil(len(names) / ncols)
    with _style():
        fig = Figure(figsize=(7.2, 2.6 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, name in zip(axes, names, strict=False):
            rows = data.points[data.points["curve"] == name]
            rows = rows[drawable(rows["x"]) & drawable(rows["y"])]
            for variant in variants:
                own = rows[rows["variant"] == variant]
                for i, (_, run) in enumerate(_first_runs(own)):
                    run = run.sort_values("idx")
                    ax.plot(run["x"], run["y"], color=colours[variant], lw=1.1,
                            label=variant if i == 0 else None)
            kind, _, title = name.partition(":")
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("recall" if kind == "pr" else "false positives")
            ax.set_ylabel("precision" if kind == "pr" else "true positive rate")
            ax.set_ylim(0, 1.02)
            ax.legend(loc="lower left" if kind == "pr" else "lower right", fontsize=6)
        for ax in axes[len(names):]:
            ax.set_visible(False)
        return to_svg(fig, salt="evaluation-curves")


def compute_figure(points: pd.DataFrame, variants: Sequence[str], metric: str, unit: str,
                   fits: dict[str, Fit], target: float, baseline: str | None,
                   proxy: bool = False, levels: dict[str, float] | None = None) -> str | None:
    """`metric` against compute on a log axis: every seed's rungs thin, each variant's fitted
    curve thick (over the compute its runs consumed, never beyond), the baseline's score at its
    largest budget dashed, each reference variant's mean score (`levels`: it trained nothing
    here, so it has no compute) dotted across, and the fits' residuals in a panel below; a
    metric scored on a `proxy` data set says so in its title. None without points."""
    if points.empty:
        return None
    colours = palette(variants)
    with _style():
        fig = Figure(figsize=(7.2, 4.6), layout="constrained")
        ax, res = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        for variant in variants:
            own = points[points["variant"] == variant]
            for _, run in _first_runs(own, by="seed"):
                ax.plot(run["compute"], run["value"], color=colours[variant], lw=0.7,
                        alpha=0.45, marker="o", ms=2.5)
            fit = fits.get(variant)
            if fit is None:
                continue
            grid = np.geomspace(own["compute"].min(), own["compute"].max(), 200)
            ax.plot(grid, fit.predict(grid), color=colours[variant], lw=2.2,
                    label=f"{variant}: {fit.form} fit")
            res.scatter(own["compute"], fit.residuals, s=9, color=colours[variant], alpha=0.8)
        if not math.isnan(target) and baseline is not None:
            ax.axhline(target, color="0.25", lw=1.0, ls="--",
                       label=f"target: {baseline} at its largest budget")
        for variant, level in (levels or {}).items():
            if drawable(np.array([level])).all():
                ax.axhline(level, color=colours[variant], lw=1.4, ls=":", label=variant)
        res.axhline(0.0, color="0.25", lw=0.8)
        ax.set_xscale("log")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}{' (PROXY data)' if proxy else ''} against training {unit} "
                     "(measured; thin: each seed, thick: fit)")
        ax.legend(loc="best", frameon=True, fontsize=6)
        res.set_xlabel(f"training {unit} consumed (log scale)")
        res.set_ylabel("residual")
        return to_svg(fig, salt=f"compute-{metric}")


def literal(text: str) -> str:
    """`text` as matplotlib shows it verbatim: with every `$` escaped no mathtext is parsed
    (matplotlib turns a remaining `\\$` back into `$` and keeps other backslashes)."""
    return text.replace("$", r"\$")


class _LiteralNames(FuncFormatter):
    """Another formatter's names, shown verbatim."""

    def __init__(self, names: Formatter):
        super().__init__(lambda x, pos: literal(names(x, pos)))


def _literal_labels(axis: Axis) -> None:
    """Tick labels that are names (fixed labels, categories) shown verbatim; numeric formatters
    keep their own mathtext (log ticks such as 10^3). Shared axes share their formatter, which
    is wrapped once."""
    names = axis.get_major_formatter()
    if isinstance(names, _LiteralNames):
        return
    if isinstance(names, FixedFormatter | StrCategoryFormatter | FuncFormatter):
        axis.set_major_formatter(_LiteralNames(names))


def show_literally(fig: Figure) -> None:
    """Every text of `fig` shown verbatim: suite, variant, metric and parameter names may hold
    `$`, which mathtext would parse (and may fail on). Tick labels are redrawn from their
    formatters, so name ticks are escaped there. Call once, on the finished figure."""
    texts = {id(t): t for t in fig.findobj(Text)}
    for text in texts.values():
        text.set_text(literal(text.get_text()))
    for ax in fig.axes:
        _literal_labels(ax.xaxis)
        _literal_labels(ax.yaxis)


def to_svg(fig: Figure, salt: str) -> str:
    """The figure as an inline <svg> element (XML declaration and DOCTYPE dropped), its text
    shown verbatim (`show_literally`)."""
    show_literally(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({**_SVG_RC, "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    text = buf.getvalue()
    return text[text.index("<svg") :]
