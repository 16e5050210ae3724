"""The family and evaluator contract: a third family end to end, every registered family and
evaluator checked against the protocols, and the import rules that keep them apart."""

import ast
import inspect
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from support.suite_run_ids import RECORDED, SUITES, suite_run_ids
from support.textgen import write_word_sst2

from bench.cli import main
from bench.contract import Family, RunContext
from bench.evals import adapters
from bench.evals.evaluator import Evaluator
from bench.evals.registry import evaluators_for, get_evaluator, known_evaluators
from bench.family import _FAMILIES, get_family, known_families

BENCH = Path(__file__).resolve().parents[1] / "bench"
FAMILY_PACKAGES = {module.split(".")[1] for module in _FAMILIES.values()}
ADAPTERS = {p for _, p in inspect.getmembers(adapters, inspect.isclass)
            if getattr(p, "_is_runtime_protocol", False)}


def _toy_suite(tmp_path: Path, evaluator: str = "glue", tasks: str = "sst2") -> Path:
    glue = tmp_path / "glue"
    write_word_sst2(glue)
    suite = tmp_path / "toy.yaml"
    suite.write_text(f"""suite: toy
family: toy
seeds: [0, 1]
budget: {{steps: 30}}
evals:
  - {evaluator}: {{path: {glue}, tasks: [{tasks}], finetune: {{epochs: 2}}}}
report: {{baseline: narrow, metrics: [glue.score, glue.sst2.acc, val.mse]}}
variants:
  narrow: {{}}
  wide: {{width: 16}}
""")
    return suite


def test_a_third_family_validates_plans_runs_evaluates_and_reports(toy, tmp_path, capsys):
    suite, results, out = _toy_suite(tmp_path), tmp_path / "results", tmp_path / "reports"
    assert main(["validate", str(suite)]) == 0
    assert main(["plan", str(suite)]) == 0
    assert "4 runs" in capsys.readouterr().out
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    with sqlite3.connect(results / "index.sqlite") as con:
        rows = dict(con.execute("SELECT variant || ':' || seed || ':' || metric, value FROM "
                                "metrics WHERE step IS NULL").fetchall())
        assert {s for (s,) in con.execute("SELECT state FROM runs")} == {"finished"}
        first = dict(con.execute("SELECT variant || ':' || seed || ':', value FROM metrics "
                                 "WHERE metric = 'curve.train_loss' AND step = 1").fetchall())
    for variant in ("narrow", "wide"):
        for seed in (0, 1):
            key = f"{variant}:{seed}:"
            # the word-count classifier separates 'good' from 'bad' once it has read both
            assert rows[key + "glue.sst2.acc"] == rows[key + "glue.score"] == 1.0
            assert rows[key + "glue.sst2.epoch"] in (1.0, 2.0)
            assert rows[key + "train.steps"] == 30
            assert rows[key + "val.mse"] < first[key] / 2  # the linear model learnt
    run_dir = next(results.rglob("samples_glue_sst2.jsonl")).parent
    assert (run_dir / "glue" / "sst2" / "result.json").is_file()
    assert (run_dir / "glue" / "sst2" / "dev_epoch2.jsonl").is_file()
    assert main(["report", str(suite), "--results", str(results), "--out", str(out)]) == 0
    html = (out / "toy.html").read_text()
    assert "glue.sst2.acc" in html and "val.mse" in html


def test_missing_evaluation_data_stops_the_suite_before_any_run_starts(toy, tmp_path, capsys):
    suite, results = _toy_suite(tmp_path, tasks="sst2, cola"), tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "nothing was run or submitted" in err
    assert "glue: cola: no folder" in err and "(variants narrow, wide)" in err
    assert not results.exists()  # no run claimed, nothing trained


def test_an_evaluator_the_family_cannot_feed_is_refused_at_validation(toy, tmp_path, capsys):
    suite = _toy_suite(tmp_path, evaluator="lambada")
    assert main(["validate", str(suite)]) == 2
    err = capsys.readouterr().err
    assert "evaluator 'lambada' needs a ContinuationScorer" in err
    assert "evaluators for it: glue" in err
    suite = _toy_suite(tmp_path / "typo", evaluator="gleu")
    assert main(["validate", str(suite)]) == 2
    assert "did you mean 'glue'?" in capsys.readouterr().err


def test_a_misspelt_evaluator_command_is_answered_with_the_closest(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["eval", "widr", "--gt", "x"])
    assert stop.value.code == 2
    assert "did you mean 'wider'?" in capsys.readouterr().err


def _protocol_members(protocol: type) -> tuple[set[str], dict[str, inspect.Signature]]:
    """A protocol's attributes and its methods' signatures."""
    methods = {name: inspect.signature(fn) for name, fn in vars(protocol).items()
               if inspect.isfunction(fn) and not name.startswith("_")}
    properties = {name for name, v in vars(protocol).items() if isinstance(v, property)}
    return set(getattr(protocol, "__annotations__", {})) | properties, methods


def _conforms(obj: object, protocol: type) -> None:
    attributes, methods = _protocol_members(protocol)
    for name in attributes:
        assert hasattr(obj, name), f"{obj!r} lacks {protocol.__name__}.{name}"
    for name, expected in methods.items():
        got = inspect.signature(getattr(obj, name))
        assert list(got.parameters) == list(expected.parameters)[1:], (
            f"{type(obj).__name__}.{name}{got} does not match {protocol.__name__}.{name}"
            f"{expected}")


@pytest.mark.parametrize("name", [*known_families(), "toy"])
def test_every_family_conforms_to_the_protocol(toy, name):
    family = get_family(name)
    _conforms(family, Family)
    assert family.name == name
    assert issubclass(family.config_model, BaseModel)
    assert family.adapters and set(family.adapters) <= ADAPTERS
    assert evaluators_for(family.adapters), f"no evaluator can score family {name!r}"
    assert all(v is None or isinstance(v, bool) for v in family.higher_is_better.values())
    assert family.report_curve.startswith("curve.")


@pytest.mark.parametrize("name", known_evaluators())
def test_every_evaluator_conforms_to_the_protocol(name):
    evaluator = get_evaluator(name)
    _conforms(evaluator, Evaluator)
    assert issubclass(evaluator.config_model, BaseModel)
    assert evaluator.needs in ADAPTERS
    assert any(evaluator.needs in get_family(f).adapters for f in known_families())


def test_validating_every_suite_imports_no_torch(suite_env):
    """A family's schema, stages and directions are read without torch: what needs it (a step's
    price, a run) sits behind one lazy import, so validating a suite stays fast."""
    code = ("import sys\nfrom bench.config.suite import load_suite\n"
            "for path in sys.argv[1:]:\n    load_suite(path)\n"
            "assert 'torch' not in sys.modules, 'validating a suite imported torch'")
    suites = sorted(str(p) for p in SUITES.glob("*/*.yaml"))
    assert {Path(p).parent.name for p in suites} >= {"cwt", "ssh", "demo"}
    subprocess.run([sys.executable, "-c", code, *suites], check=True)


def test_the_run_context_protocol_is_what_the_runner_gives():
    from bench.execution.runner import RunFolderContext

    attributes, methods = _protocol_members(RunContext)
    fields = set(RunFolderContext.__dataclass_fields__) | {"main"}
    assert attributes <= fields
    for name, expected in methods.items():
        got = inspect.signature(getattr(RunFolderContext, name))
        assert list(got.parameters) == list(expected.parameters)
    assert isinstance(RunFolderContext.main, property)


def _imports(path: Path) -> set[str]:
    """The bench modules a file imports, at any depth (lazy imports inside functions count);
    `from bench.pkg import module` names the module, not the package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = {f"{node.module}.{a.name}" for a in node.names} & set(MODULES)
            found |= modules or {node.module}
    return {m for m in found if m.split(".")[0] == "bench"}


def _module(path: Path) -> str:
    parts = path.relative_to(BENCH.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in BENCH.rglob("*.py")}


def _part(module: str) -> str | None:
    """The part of bench a module belongs to: its package, or a module of the ground floor."""
    parts = module.split(".")
    return parts[1] if parts[0] == "bench" and len(parts) > 1 else None


# What each part of bench may import of the others: the pipeline's layers, bottom up (DESIGN.md,
# "Packages"). A family imports no other family; nothing but `__main__` imports the command line.
GROUND = {"errors", "schema", "resources", "contract", "family"}
FAMILY_MAY_IMPORT = GROUND | {"util", "training", "evals", "text", "data"}
MAY_IMPORT = {
    "errors": set(), "schema": set(), "resources": {"errors", "schema"},
    "contract": {"errors", "schema", "resources"}, "family": {"contract"},
    "util": {"errors"},
    "data": GROUND | {"util"},
    "training": GROUND | {"util"},
    "store": GROUND | {"util"},
    "tracking": GROUND | {"util"},
    "evals": GROUND | {"util", "training"},
    "text": GROUND | {"util", "training", "data"},
    "config": GROUND | {"util", "evals", "tracking"},
    "execution": GROUND | {"util", "config", "training", "store", "evals", "text", "tracking"},
    "report": GROUND | {"util", "config", "evals", "store", "execution"},
    "cli": GROUND | {"util", "config", "training", "store", "evals", "execution", "report", "data",
            "tracking"},
    "results": GROUND | {"util", "config", "store", "evals", "execution", "report"},
    "__main__": {"cli"},
} | dict.fromkeys(FAMILY_PACKAGES, FAMILY_MAY_IMPORT)


def layering_breaches(files: dict[str, set[str]]) -> list[str]:
    """Each import (file -> the bench modules it imports) that a layer may not make."""
    breaches = []
    for module, used in sorted(files.items()):
        own = _part(module)
        if own is None:
            continue
        allowed = MAY_IMPORT[own] | {own}
        breaches += [f"{module} imports {m}" for m in sorted(used) if _part(m) not in allowed]
    return breaches


def import_circles(files: dict[str, set[str]]) -> list[list[str]]:
    """The circles of the module import graph (lazy imports count), each once per entry."""
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for used in sorted(files.get(module, set()) - {module}):
            if state.get(used) == "open":
                circles.append([*path[path.index(used):], used])
            elif used not in state:
                visit(used, [*path, used])
        state[module] = "done"

    for module in sorted(files):
        if module not in state:
            visit(module, [module])
    return circles


def test_every_layer_imports_only_what_it_stands_on():
    files = {module: _imports(path) for module, path in MODULES.items()}
    assert set(MAY_IMPORT) >= {_part(m) for m in files} - {None}, "a package with no rule"
    assert layering_breaches(files) == []
    assert import_circles(files) == []
    # the rules catch a breach and a circle
    broken = files | {"bench.training.train": files["bench.training.train"] | {
        "bench.config.suite"}}
    assert layering_breaches(broken) == ["bench.training.train imports bench.config.suite"]
    looped = files | {"bench.util.atomic": {"bench.util.paths"},
                      "bench.util.paths": {"bench.util.atomic"}}
    assert [set(c) for c in import_circles(looped)] == [{"bench.util.atomic", "bench.util.paths"}]


def test_the_contract_is_the_ground_floor():
    for module in _imports(BENCH / "contract.py"):
        assert _part(module) in MAY_IMPORT["contract"], f"bench/contract.py imports {module}"
    assert {_part(m) for m in _imports(BENCH / "evals" / "adapters.py")} <= {
        "schema", "evals", "util"}


def test_every_suite_keeps_its_run_ids(suite_env):
    """A run's id is its config and seed (and its inputs' contents, fingerprinted apart): the
    suites in suites/ resolve to the ids recorded in suite_run_ids.json, so stored runs stay
    theirs. A deliberate change of a suite or a default regenerates the file (`make run-ids`)."""
    assert suite_run_ids() == json.loads(RECORDED.read_text())


def test_design_names_every_module_and_every_package_says_what_it_may_import():
    """DESIGN.md's package tables are the tree: a module added without a row fails here (an
    evaluator's `bench eval` command is covered by the `*_cli.py` row)."""
    design = (BENCH.parent / "DESIGN.md").read_text()
    unnamed = [str(p.relative_to(BENCH.parent)) for p in sorted(BENCH.rglob("*.py"))
               if p.name != "__init__.py" and f"`{p.name}`" not in design
               and not (p.parent.name == "evals" and p.name.endswith("_cli.py"))]
    assert unnamed == []
    silent = [str(p.relative_to(BENCH.parent)) for p in sorted(BENCH.rglob("__init__.py"))
              if p.parent != BENCH and "May import" not in p.read_text()]
    assert silent == []
    assert set(MAY_IMPORT) >= {p.parent.name for p in BENCH.rglob("__init__.py")} - {"bench"}
