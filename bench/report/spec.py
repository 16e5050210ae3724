"""What a suite asks of its report, resolved from the suite: title, baseline, key metrics and
their directions, the paper's numbers, notes (proxy data sets, ladders of budgets), the family's
unit and curve, and the study of its sweep."""

from dataclasses import dataclass, field
from pathlib import Path

from bench.config.suite import PaperTableConfig, Suite
from bench.errors import UserError
from bench.evals.registry import get_evaluator
from bench.report.study import SweepSource


@dataclass(frozen=True, kw_only=True)
class ReportSpec:
    """What a suite asks of its report (its `report:` and `reference:` blocks, resolved)."""

    suite: str
    title: str
    baseline: str | None
    metrics: list[str]
    higher_is_better: dict[str, bool | None]  # None: neither direction is better
    reference: dict[str, dict[str, float]]
    reference_source: str | None
    notes: list[str]
    curve: str = "curve.val_nll"
    item_unit: str = "tokens"  # what the family's training data are counted in
    table: PaperTableConfig | None = None  # a paper's comparison table to reproduce
    # metrics drawn against compute on a ladder of budgets (None: compute.default_compute_metrics)
    compute_metrics: list[str] | None = None
    # evaluators whose data are a proxy for the benchmark (their metrics are labelled so)
    proxies: list[str] = field(default_factory=list)
    variants: list[str]
    references: list[str] = field(default_factory=list)  # variants scoring a checkpoint
    sweep: SweepSource | None = None  # the suite's Optuna study, when it has a `sweep:` block

    def check(self) -> None:
        """A UserError where the report cannot be made as asked: a suite name that cannot name
        files, a baseline that is no variant, ratios without a baseline."""
        if not self.suite or Path(self.suite).name != self.suite:
            raise UserError(f"suite name {self.suite!r}: expected a plain name to name report "
                            "files")
        if self.baseline is not None and self.baseline not in self.variants:
            raise UserError(
                f"report.baseline of suite {self.suite!r}: {self.baseline!r} is not one of its "
                f"variants ({', '.join(self.variants)})")
        if self.table is not None and self.table.ratios and self.baseline is None:
            raise UserError(f"report.table.ratios of suite {self.suite!r}: ratios need "
                            "report.baseline")

    def is_proxy(self, metric: str) -> bool:
        """Whether `metric` (`<evaluator>.<name>`) is scored on a proxy data set."""
        return metric.partition(".")[0] in self.proxies


def spec_for(suite: Suite, results: Path, storage: str | None = None,
             sweep_command: str = "") -> ReportSpec:
    """The report `suite` asks for. A suite with a `sweep:` block reports its study, kept in
    `storage` (a journal file or a database URL), else in the journal `bench sweep` keeps under
    the `results` folder; `sweep_command` is how that sweep is run."""
    family = suite.family
    rep = suite.head.report
    notes = list(rep.notes)
    proxies = [name for name, eval_cfg in next(iter(suite.variants.values())).evals
               if get_evaluator(name).is_proxy(eval_cfg)]
    for name in proxies:
        notes.append(f"'{name}' is scored on a PROXY data set built from freely "
                     "available text, not on the benchmark itself: compare variants with "
                     "each other, not with published numbers.")
    ladders = [name for name, v in suite.variants.items() if v.trains and v.budget.is_ladder]
    if ladders:
        notes.append(f"{', '.join(ladders)} trained on a ladder of budgets: the tables compare "
                     "each variant at its largest budget.")
    references = [name for name, v in suite.variants.items() if not v.trains]
    if references:
        notes.append(f"{', '.join(references)} (reference): a checkpoint trained elsewhere "
                     "(a released model), scored here by the same evaluators; it trained "
                     "nothing here, so it has no training compute or curve, and is drawn "
                     "across the compute figures as a dotted line.")
    metrics = rep.metrics or family.default_metrics
    return ReportSpec(
        suite=suite.name,
        title=rep.title or suite.head.description or suite.name,
        baseline=rep.baseline,
        metrics=metrics,
        higher_is_better={m: suite.higher_is_better(m) for m in [
            *metrics, *(rep.compute_metrics or []), *(rep.table.columns if rep.table else [])]},
        reference=suite.head.reference,
        reference_source=rep.reference_source,
        notes=notes,
        variants=list(suite.variants),
        references=references,
        item_unit=family.item_unit,
        curve=family.report_curve,
        table=rep.table,
        compute_metrics=rep.compute_metrics,
        proxies=proxies,
        sweep=sweep_source(suite, results, storage, sweep_command),
    )


def sweep_source(suite: Suite, results: Path, storage: str | None, command: str
                 ) -> SweepSource | None:
    """Where the suite's study lives and what it optimises; None without a `sweep:` block."""
    cfg = suite.head.sweep
    if cfg is None:
        return None
    from bench.execution.sweep import default_storage, study_name  # only sweeps need them

    name = study_name(suite)
    return SweepSource(
        study=name, storage=storage or default_storage(results, name),
        metric=cfg.objective.metric, direction=cfg.objective.direction,
        params=list(cfg.space), trials=cfg.trials, reported=cfg.pruner.metric, command=command)
