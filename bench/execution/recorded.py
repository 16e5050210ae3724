"""What a results store already holds of the runs a command plans, from one read of its index
(`Store.recorded`):

- runs an earlier version recorded under the id it gave then (a hash over the config with its
  input paths, `legacy_run_id`), found by the portable id their own record gives
  (`bench.config.plan.run_id`) and kept under their old ids: the folder's name stays an alias
  of the portable id, nothing in the store is renamed or rewritten, and the data may have
  moved since;
- runs whose config and seed ran on other input contents: resuming or reusing one would mix
  data it was not trained on;
- for `bench status` on a machine that does not see the data, the runs recorded with each
  planned run's config and seed.
"""

import json
from contextlib import suppress
from dataclasses import replace
from typing import Any

from bench.config.plan import identity, legacy_run_id, run_id
from bench.contract import RunSpec
from bench.errors import UserError
from bench.store.runs import Recorded, Store
from bench.util.fingerprint import MISSING, changed_inputs

# The states a legacy folder is preferred in where two hold one identity (data read from two
# paths by an earlier version): the finished one first.
_PREFERENCE = {"finished": 0, "running": 1, "failed": 2, "pruned": 3}


class KnownRuns:
    """The recorded runs of some suites (one read of the index). A record's portable id is
    worked out only for runs that a planned run may be (same suite, variant and seed, another
    id), so a store whose runs all carry their portable ids costs a read and nothing more."""

    def __init__(self, rows: list[Recorded]):
        self.ids = {row.run_id for row in rows}
        self._like: dict[tuple[str, int], list[Recorded]] = {}
        for row in rows:
            self._like.setdefault((row.variant, row.seed), []).append(row)
        self._portable: dict[str, str | None] = {}

    def like(self, run: RunSpec) -> list[Recorded]:
        """The recorded runs of `run`'s variant and seed under other ids."""
        return [row for row in self._like.get((run.variant.name, run.seed), [])
                if row.run_id != run.run_id]

    def portable(self, row: Recorded) -> str | None:
        """The id this version gives the run its record describes (None where it cannot read
        the record's family or evaluators)."""
        if row.run_id not in self._portable:
            try:
                self._portable[row.run_id] = run_id(row.config, row.seed, row.inputs)
            except (KeyError, TypeError, AttributeError, UserError):
                self._portable[row.run_id] = None
        return self._portable[row.run_id]

    def legacy(self, row: Recorded) -> bool:
        """Recorded under the id an earlier version gave it, not the portable one."""
        portable = self.portable(row)
        return portable is not None and portable != row.run_id and \
            legacy_run_id(row.config, row.seed, row.inputs) == row.run_id


def known_runs(store: Store, suite: str) -> KnownRuns:
    """The runs `store` recorded for `suite`."""
    return KnownRuns(store.recorded(suite))


def with_aliases(runs: list[RunSpec], known: KnownRuns) -> list[RunSpec]:
    """`runs` with the id of each run that an earlier version recorded under its old id (and
    no folder holds under the portable one) replaced by the old id, as is the branch source of
    a ladder's lower rung whose longest rung is such a run."""
    alias = {}
    for run in runs:
        if run.run_id in known.ids:
            continue
        found = [row for row in known.like(run)
                 if known.legacy(row) and known.portable(row) == run.run_id]
        if found:
            alias[run.run_id] = min(
                found, key=lambda row: (_PREFERENCE.get(row.state, 9), row.run_id)).run_id

    def aliased(name: str | None) -> str | None:
        return alias.get(name, name) if name is not None else None

    return [replace(r, run_id=alias.get(r.run_id, r.run_id),
                    branch_source=aliased(r.branch_source)) for r in runs]


def matched_by_config(runs: list[RunSpec], known: KnownRuns) -> list[RunSpec]:
    """For `bench status` where a run's inputs are not to be seen (a fingerprint 'missing': a
    laptop that mounts the results but not the data): the id of the run recorded with the same
    config and seed in its place (a finished one first), its inputs unchecked. Never for
    running: without the inputs a run cannot be told from one on other data."""
    out = []
    for run in runs:
        missing = any(e["sha256"] == MISSING for e in run.inputs.values())
        others = known.like(run) if missing and run.run_id not in known.ids else []
        key = _key(run.resolved) if others else ""
        same = [row for row in others if _key(row.config) == key]
        out.append(replace(run, run_id=min(
            same, key=lambda row: (_PREFERENCE.get(row.state, 9), row.run_id)).run_id)
            if same else run)
    return out


def aliased_count(planned: list[RunSpec], runs: list[RunSpec]) -> int:
    """How many of `planned` `with_aliases` found under an earlier version's id."""
    return sum(a.run_id != b.run_id for a, b in zip(planned, runs, strict=True))


def input_conflicts(runs: list[RunSpec], known: KnownRuns) -> list[str]:
    """A message for every planned run (ids as planned, portable) whose config and seed already
    ran on other input contents, wherever those inputs lay."""
    lines = []
    for run in runs:
        others = known.like(run)
        key = _key(run.resolved) if others else ""
        for old in others:
            if known.portable(old) == run.run_id or _key(old.config) != key:
                continue
            changed = changed_inputs(old.inputs, run.inputs) or [
                "inputs not fingerprinted when it ran (an older version of bench)"]
            lines.append(f"{run.variant.name} seed {run.seed}: run {old.run_id} "
                         f"({old.state}) read other inputs; "
                         + "; ".join(changed) + f"; new run id {run.run_id}")
    return lines


def _key(config: dict[str, Any]) -> str:
    """A config as compared across machines: input paths left out, keys sorted."""
    with suppress(KeyError, TypeError, AttributeError, UserError):
        config = identity(config)
    return json.dumps(config, sort_keys=True)
