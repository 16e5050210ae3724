"""PR and ROC figures for the `bench eval` commands (SVG, PNG or PDF by the file's suffix)."""

from collections.abc import Sequence
from pathlib import Path

from bench.evals.curves import Curve, PRCurve
from bench.util.atomic import write_via


def plot_curves(curves: Sequence[Curve], path: Path, title: str) -> None:
    """One figure with every curve; PR curves show their AP, ROC curves their x-axis in FPs."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for c in curves:
        label = f"{c.name} (AP {c.ap:.4f})" if isinstance(c, PRCurve) else c.name
        ax.plot(*c.xy(), label=label)
    is_pr = all(c.kind == "pr" for c in curves)
    ax.set_xlabel("recall" if is_pr else "false positives")
    ax.set_ylabel("precision" if is_pr else "true positive rate")
    ax.set_ylim(0, 1.01)
    if is_pr:
        ax.set_xlim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left" if is_pr else "lower right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    write_via(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "svg"))
