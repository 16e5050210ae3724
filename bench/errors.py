"""User-facing errors: the CLI prints their message and exits 2, with no traceback."""

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"; did you mean 'x'?" naming the known name closest to a misspelt one, else ""."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class UserError(Exception):
    """A problem with the user's input (suite file, dataset, prediction file, arguments)."""


class RunFailed(Exception):
    """A run could not finish (a non-finite loss, ...): it is recorded and the suite goes on."""


class Pruned(Exception):
    """A run stopped early on purpose (a sweep's pruner judged it unpromising): not a failure."""


class ClaimRefused(RunFailed):
    """This process may not write a run: it is finished, or another live process holds it.

    `state` is the run's state in the index (None when unknown) and `status` says it in words,
    e.g. 'running in process 1234 on host gpu-3'."""

    def __init__(self, run_id: str, state: str | None, status: str):
        super().__init__(f"run {run_id} is {status}")
        self.run_id, self.state, self.status = run_id, state, status

    def __reduce__(self) -> tuple:  # rebuilt from its fields when sent between processes
        return ClaimRefused, (self.run_id, self.state, self.status)
