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
from dataclasses import replace
from functools import cached_property
from typing import Any

from bench.config.plan import content_id, identity, legacy_run_id
from bench.contract import RunSpec
from bench.errors import UserError
from bench.store.runs import Recorded, Store
from bench.util.fingerprint import changed_inputs, missing

# The states a legacy folder is preferred in where two hold one identity (data read from two
# paths by an earlier version): the finished one first.
_PREFERENCE = {"finished": 0, "running": 1, "failed": 2, "pruned": 3}


class Known:
    """A recorded run and what its record says, each worked out once and only when asked."""

    def __init__(self, row: Recorded):
        self.row = row

    @cached_property
    def identity(self) -> dict[str, Any] | None:
        """Its config as run ids hash it (None where this version cannot read its family,
        evaluators or keys)."""
        try:
            return identity(self.row.config)
        except (KeyError, TypeError, AttributeError, UserError):
            return None

    @cached_property
    def portable(self) -> str | None:
        """The id this version gives the run."""
        return None if self.identity is None else content_id(
            self.identity, self.row.seed, self.row.inputs)

    @cached_property
    def legacy(self) -> bool:
        """Recorded under the id an earlier version gave it, not the portable one."""
        return self.portable is not None and self.portable != self.row.run_id and \
            legacy_run_id(self.row.config, self.row.seed, self.row.inputs) == self.row.run_id

    @cached_property
    def key(self) -> str:
        """Its config as compared across machines (`_key`)."""
        return _key(self.identity if self.identity is not None else self.row.config)


class KnownRuns:
    """The recorded runs of a suite (one read of the index). What a record says is worked out
    only for records sharing a planned run's variant and seed under another id, once each: a
    store whose runs carry their portable ids costs a read and, for a ladder, its other rungs."""

    def __init__(self, rows: list[Recorded]):
        self.ids = {row.run_id for row in rows}
        self._like: dict[tuple[str, int], list[Known]] = {}
        for row in rows:
            self._like.setdefault((row.variant, row.seed), []).append(Known(row))

    def like(self, run: RunSpec) -> list[Known]:
        """The recorded runs of `run`'s variant and seed under other ids."""
        return [k for k in self._like.get((run.variant.name, run.seed), [])
                if k.row.run_id != run.run_id]


def known_runs(store: Store, suite: str) -> KnownRuns:
    """The runs `store` recorded for `suite`."""
    return KnownRuns(store.recorded(suite))


def with_aliases(runs: list[RunSpec], known: KnownRuns) -> list[RunSpec]:
    """`runs` with the id of each run that an earlier version recorded under its old id (and
    no folder holds under the portable one) replaced by the old id, as is the branch source of
    a ladder's lower rung whose longest rung is such a run."""
    alias = {}
    for run in runs:
        if run.run_id not in known.ids:
            found = [k for k in known.like(run) if k.legacy and k.portable == run.run_id]
            if found:
                alias[run.run_id] = _preferred(found)
    return [replace(r, run_id=alias.get(r.run_id, r.run_id),
                    branch_source=alias.get(r.branch_source, r.branch_source)
                    if r.branch_source is not None else None) for r in runs]


def matched_by_config(runs: list[RunSpec], known: KnownRuns) -> list[RunSpec]:
    """For `bench status` where a run's inputs are not to be seen (a fingerprint 'missing': a
    laptop that mounts the results but not the data): the id of the run recorded with the same
    config and seed in its place (a finished one first), its inputs unchecked. Never for
    running: without the inputs a run cannot be told from one on other data."""
    out = []
    for run in runs:
        others = known.like(run) if missing(run.inputs) and run.run_id not in known.ids else []
        key = _key(identity(run.resolved)) if others else ""
        same = [k for k in others if k.key == key]
        out.append(replace(run, run_id=_preferred(same)) if same else run)
    return out


def input_conflicts(runs: list[RunSpec], known: KnownRuns) -> list[str]:
    """A message for every planned run (ids as planned, portable) whose config and seed already
    ran on other input contents, wherever those inputs lay."""
    lines = []
    for run in runs:
        others = [k for k in known.like(run) if k.portable != run.run_id]  # not the same run
        if not others:
            continue
        key = _key(identity(run.resolved))
        for old in others:
            if old.key != key:
                continue
            changed = changed_inputs(old.row.inputs, run.inputs) or [
                "inputs not fingerprinted when it ran (an older version of bench)"]
            lines.append(f"{run.variant.name} seed {run.seed}: run {old.row.run_id} "
                         f"({old.row.state}) read other inputs; "
                         + "; ".join(changed) + f"; new run id {run.run_id}")
    return lines


def _preferred(found: list[Known]) -> str:
    """The id of the run to show or resume of several recorded for one planned run."""
    return min(found, key=lambda k: (_PREFERENCE.get(k.row.state, 9), k.row.run_id)).row.run_id


def _key(config: dict[str, Any]) -> str:
    """A config as compared across machines (input paths left out), keys sorted."""
    return json.dumps(config, sort_keys=True)
