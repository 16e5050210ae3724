"""How values print in a report: numbers to as many digits as seed noise leaves meaningful,
counts in scientific notation, rates, ratios, durations, and text from the index or the suite
made safe to print (control characters escaped, a failure's reason cut short with break
opportunities in long tokens)."""

import math
import re

from markupsafe import Markup

DASH = "—"
# Characters of a failure's reason a report prints (a traceback's last lines); the run's
# state.json keeps the whole of it.
REASON_CHARS = 600
# An unbroken run of characters in a reason gets a break opportunity (a zero-width space) after
# every so many, so that a long token wraps inside the reason's column: that column does not wrap
# 'anywhere' (the template's `overflow-wrap: normal`), which keeps the PDF's layout of it linear
# in its length.
TOKEN_CHARS = 30
_BREAK = "\u200b"
# Control characters (but tab and line ends) are shown as escapes, lone surrogates as the
# replacement character. Text from run folders and the index has no surrogates (the store escapes
# them when it writes, the index refuses text that is not UTF-8); a suite's YAML can give them
# (`"\ud800"` in a title, a note or the reference source).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
PLAIN_LIMIT = 1e15  # from here on fixed-point cells (rates, ratios) print in scientific notation


def fmt_value(x: float | None) -> str:
    """Four decimals below 10 (accuracies, losses), two up to 1000 (perplexities, percentages),
    scientific for huge or tiny values: as many digits as seed noise can leave meaningful."""
    if x is None or math.isnan(x):
        return DASH
    size = abs(x)
    if size != 0 and (size >= 1e5 or size < 1e-3):
        return f"{x:.3e}"
    if size >= 1000:
        return f"{x:,.1f}"
    return f"{x:.2f}" if size >= 10 else f"{x:.4f}"


def fmt_sci(x: float | None) -> str:
    """Counts of FLOPs and tokens: always scientific, so columns compare at a glance."""
    return DASH if x is None or math.isnan(x) else f"{x:.3e}"


def _fixed(x: float, spec: str) -> str:
    """`x` in the fixed-point format `spec`, or scientific from PLAIN_LIMIT on (and infinite),
    so that no cell prints hundreds of digits."""
    return format(x, spec) if abs(x) < PLAIN_LIMIT else f"{x:.3e}"


def fmt_rate(x: float | None) -> str:
    """Throughput: whole units with thousands separators."""
    return DASH if x is None or math.isnan(x) else _fixed(x, ",.0f")


def fmt_percent(x: float | None) -> str:
    """A fraction such as MFU as a percentage: 0.4123 -> 41.2%."""
    return DASH if x is None or math.isnan(x) else _fixed(100 * x, ".1f") + "%"


def fmt_gib(x: float | None) -> str:
    """Bytes in GiB, two decimals: device memory at a glance."""
    return DASH if x is None or math.isnan(x) else _fixed(x / 2**30, ",.2f") + " GiB"


def fmt_signed(x: float) -> str:
    """A difference with its sign always shown."""
    return DASH if math.isnan(x) else ("+" if x >= 0 else "−") + fmt_value(abs(x))


def fmt_interval(mean: float, low: float, high: float, n: int) -> str:
    """`mean ± half-width`; a single seed has no interval and says so, and an interval from
    two seeds (one degree of freedom, t = 12.7) says how few it stands on."""
    if n == 0 or math.isnan(mean):
        return DASH
    if math.isnan(low) or n < 3:
        shown = fmt_value(mean) if math.isnan(low) else fmt_mean_half(mean, (high - low) / 2)
        return f"{shown} (n={n})"
    return fmt_mean_half(mean, (high - low) / 2)


def fmt_mean_half(mean: float, half: float) -> str:
    """`mean ± half-width` for a compact table: the mean alone without an interval (one seed)."""
    if math.isnan(mean):
        return DASH
    return fmt_value(mean) if math.isnan(half) else f"{fmt_value(mean)} ± {fmt_value(half)}"


def fmt_ratio(x: float) -> str:
    """A ratio to the baseline, as papers print it: ×1.57."""
    return DASH if math.isnan(x) else "×" + _fixed(x, ".2f")


def fmt_param(x: object, spec: str = ".4g") -> str:
    """A sampled parameter: floats to a few significant digits (log-scale ranges span decades),
    anything else (ints, categories) as it is."""
    if x is None:
        return DASH
    return format(x, spec) if isinstance(x, float) else str(x)


def fmt_duration(seconds: float | None) -> str:
    """Wall time as h:mm:ss."""
    if seconds is None or math.isnan(seconds):
        return DASH
    total = round(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


# What a training curve's columns measure, as an axis names them.
CURVE_LABELS = {"val_nll": "validation NLL (nats per predicted token)",
                "val_loss": "validation loss", "train_loss": "training loss", "lr": "learning rate"}


def curve_label(metric: str) -> str:
    """A curve metric (`curve.val_nll`) as a figure's axis and caption name it."""
    column = metric.removeprefix("curve.")
    return CURVE_LABELS.get(column, column.replace("_", " "))


def is_perplexity(metric: str) -> bool:
    """Whether a metric is a perplexity, which spans decades and is drawn on a log axis."""
    return metric.rsplit(".", 1)[-1].startswith(("ppl", "perplexity"))


def compute_label(column: str) -> str:
    """'train.flops' -> 'FLOPs', 'train.images_per_s' -> 'images/s'; other columns as they are."""
    if column == "train.flops":
        return "FLOPs"
    if column.startswith("train.") and column.count(".") == 1:
        return column.removeprefix("train.").replace("_per_s", "/s")
    return column


def format_column(column: str, value: float) -> str:
    """A per-run value as its column prints it: compute as counts and rates, any other metric
    as a value."""
    if column.startswith("train.") and column.count(".") == 1:
        return fmt_rate(value) if column.endswith("_per_s") else fmt_sci(value)
    return fmt_value(value)


def short_id(run_id: str) -> str:
    """A run id as tables name a run: its first 12 characters, an ellipsis where it is longer."""
    return run_id if len(run_id) <= 12 else run_id[:12] + "…"


def cell_text(value: object) -> str:
    """A text field of the index as a cell prints it: missing (None, NaN) as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return str(value)


def reason_text(reason: object, folder: str | None = None) -> str:
    """Why a run ended, as a table cell prints it: the first REASON_CHARS characters, with
    break opportunities in long unbroken tokens, and where it was cut, where the whole is (the
    run's `folder` when known)."""
    text = cell_text(reason)
    if len(text) <= REASON_CHARS:
        return breakable(text)
    where = f"{folder}/state.json" if folder else "the run's state.json"
    return (f"{breakable(text[:REASON_CHARS])}… (cut at {REASON_CHARS:,} of {len(text):,} "
            f"characters; full reason in {where})")


def breakable(text: str) -> str:
    """`text` with a zero-width space after every TOKEN_CHARS characters of an unbroken run."""
    return re.sub(rf"\S{{{TOKEN_CHARS}}}(?=\S)", lambda m: m.group() + _BREAK, text)


def printable(text: str) -> str:
    """`text` safe to print: control characters as escapes (`\\x1b`), lone surrogates as the
    replacement character; tabs and line ends are kept."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return _SURROGATE.sub("\ufffd", text)


def svg_markup(svg: str | None) -> Markup | None:
    """A figure's inline SVG as markup the template inserts as it is; None without a figure."""
    return Markup(svg) if svg else None
