"""Command-line overrides (`-o KEY=VALUE`): the same suite as the same edit of the file would
give (values, validation, run ids), errors naming the override, and the overrides recorded in
each run's provenance and shown by `bench plan`."""

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.config.plan import plan
from bench.config.suite import load_suite
from bench.errors import UserError

pytestmark = pytest.mark.usefixtures("toy")

TOY = """suite: ov
family: toy
seeds: [0, 1]
budget: {flops: 20000}
evals: []
optim: {lr: 0.05}
variants:
  narrow: {}
  wide: {width: 16}
"""


def _write(tmp_path: Path, text: str, name: str = "ov.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("overrides", "edit"), [
    (["optim.lr=3e-4"], ("optim: {lr: 0.05}", "optim: {lr: 3.0e-4}")),
    (["variants.wide.width=32"], ("wide: {width: 16}", "wide: {width: 32}")),
    (["variants.narrow={width: 4, batch_size: 8}"],
     ("narrow: {}", "narrow: {width: 4, batch_size: 8}")),
    (["budget.steps=7"], ("budget: {flops: 20000}", "budget: {steps: 7}")),  # the unit replaced
    (["seeds=[3]", "seeds=[5]"], ("seeds: [0, 1]", "seeds: [5]")),  # the later wins
])
def test_an_override_gives_the_run_ids_of_the_same_edit_of_the_file(tmp_path, overrides, edit):
    base = _write(tmp_path, TOY)
    edited = _write(tmp_path, TOY.replace(*edit), "edited.yaml")
    assert TOY.replace(*edit) != TOY
    by_override = [r.run_id for r in plan(load_suite(base, overrides=overrides))]
    by_file = [r.run_id for r in plan(load_suite(edited))]
    assert by_override == by_file
    assert by_override != [r.run_id for r in plan(load_suite(base))]


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=fast", "-o optim.lr=fast: optim.lr: Input should be a valid number"),
    ("optim.lrr=1", "-o optim.lrr=1: optim.lrr: unknown key (not a field here; did you mean "
                    "'lr'?"),
    ("variants.wide.width=0", "-o variants.wide.width=0: variants.wide.width: Input should be "
                              "greater than 0"),
    ("width.x=1", "-o width.x=1: width: Input should be a valid integer"),  # made, then checked
    ("seeds.5=1", "-o seeds.5=1: seeds has 2 entries; no entry 5"),
    ("variants.narrow.x.y=1", "-o variants.narrow.x.y=1: variants.narrow.x"),
    ("optim", "-o optim: expected KEY=VALUE"),
    ("optim..lr=1", "-o optim..lr=1: 'optim..lr': an empty part in the dotted key"),
    ("extends=other.yaml", "-o extends=other.yaml: 'extends' is read before overrides apply"),
    ("optim.lr=[1", "-o optim.lr=[1:1: not valid YAML"),
    ("optim.lr=${NOT_SET_ANYWHERE}", "-o optim.lr=${NOT_SET_ANYWHERE}:1: variable "
                                     "${NOT_SET_ANYWHERE} is not set"),
])
def test_a_bad_override_is_named(tmp_path, override, message):
    with pytest.raises(UserError) as err:
        load_suite(_write(tmp_path, TOY), env={}, overrides=[override])
    assert message in str(err.value)


def test_an_override_of_an_unset_variables_value_needs_no_variable(tmp_path):
    path = _write(tmp_path, TOY.replace("optim: {lr: 0.05}", "optim:\n  lr: ${LR}"))
    with pytest.raises(UserError, match=r"variable \$\{LR\} is not set"):
        load_suite(path, env={})
    assert load_suite(path, env={}, overrides=["optim.lr=0.1"]).variants[
        "narrow"].config.optim.lr == 0.1


def test_plan_shows_the_overrides_and_a_run_records_them(tmp_path, capsys):
    path, results = _write(tmp_path, TOY), tmp_path / "results"
    args = ["-o", "variants.wide.width=24", "--only", "wide", "--seeds", "0"]
    assert main(["plan", str(path), *args]) == 0
    out = capsys.readouterr().out
    assert "  override variants.wide.width=24\n" in out
    assert main(["run", str(path), *args, "--results", str(results), "--no-progress"]) == 0
    (folder,) = (results / "ov").iterdir()
    assert json.loads((folder / "config.json").read_text())["config"]["width"] == 24
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["overrides"] == ["variants.wide.width=24"]
    assert main(["status", str(path), *args, "--results", str(results)]) == 0
    assert "finished" in capsys.readouterr().out  # the same overrides find the same run
