"""TensorBoard: event files in the run's folder (`<run>/tensorboard/`), written by torch's
SummaryWriter: a scalar series per curve column at each step (`curve/loss`, `curve/val_loss`,
`curve/lr`, ...), the final metrics under `final/` at the last step, the resolved config and the
run's tags as text.

`tensorboard --logdir results/<suite>` shows every run of a suite. A resumed run writes a new
event file in the same folder with `purge_step` just past its checkpoint: TensorBoard's reader
drops the events a killed process wrote after it, and the resumed run writes those steps again.
"""

import json
from pathlib import Path
from typing import Any

from bench.tracking.tracker import TrackedRun, numbers

FLUSH_SECONDS = 30  # events reach the file at least this often, and at every checkpoint


class Tracker:
    def __init__(self) -> None:
        self.writer: Any = None
        self.step = 0

    def start(self, run: TrackedRun) -> int:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run.folder / "tensorboard"),
                                    purge_step=run.resumed_at + 1, flush_secs=FLUSH_SECONDS)
        self.step = run.resumed_at
        if run.resumed_at == 0:
            self.writer.add_text("config", _code(json.dumps(run.config, indent=2,
                                                            default=str)), 0)
            self.writer.add_text("run", _code(json.dumps(run.tags, indent=2)), 0)
        return run.resumed_at

    def log(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            for column, value in numbers(row).items():
                self.writer.add_scalar(f"curve/{column}", value, row["step"])
            self.step = row["step"]

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, metrics: dict[str, float], files: list[Path]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"final/{name}", value, self.step)
        self.writer.flush()

    def close(self, ended: str) -> None:
        self.writer.close()


def _code(text: str) -> str:
    """`text` as a Markdown code block (TensorBoard renders text summaries as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines())
