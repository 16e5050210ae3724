"""User-facing errors: the CLI prints their message and exits 2, with no traceback."""


class UserError(Exception):
    """A problem with the user's input (suite file, dataset, prediction file, arguments)."""


class RunFailed(Exception):
    """A run could not finish (a non-finite loss, ...): it is recorded and the suite goes on."""


class Pruned(Exception):
    """A run stopped early on purpose (a sweep's pruner judged it unpromising): not a failure."""
