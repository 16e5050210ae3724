"""Suite files: merging, variables, run ids, and malformed files answered with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.config.plan import plan
from bench.config.suite import load_suite
from bench.config.yaml_source import interpolate
from bench.errors import UserError

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
suite: t-suite
family: lm
seeds: [0, 1]
budget: {flops: 1.0e+12}
model: {preset: micro}
data:
  train: ${DATA_DIR:-/data}/train.jsonl
  seq_len: 32
  tokenizer: {train_bpe: 300}
train:
  batch_size: 4
  optim: {lr: 1.0e-3}
objective: softmax
evals:
  - lambada: {path: /data/cloze.jsonl}
variants:
  softmax: {}
  cwt: {objective: cwt, head: embedding_transpose}
report: {baseline: softmax}
"""


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_suite_resolves_variants_and_plans(tmp_path):
    suite = load_suite(write(tmp_path, BASE), env={})
    assert list(suite.variants) == ["softmax", "cwt"]
    assert suite.variants["cwt"].config.objective == "cwt"
    assert suite.variants["cwt"].config.data.train == "/data/train.jsonl"
    runs = plan(suite)
    assert [(r.variant.name, r.seed) for r in runs] == [
        ("softmax", 0), ("softmax", 1), ("cwt", 0), ("cwt", 1)]
    assert len({r.run_id for r in runs}) == 4
    assert [r.variant.name for r in plan(suite, only=["cwt"], seeds=[5])] == ["cwt"]


def test_run_ids_are_content_addressed(tmp_path):
    a = plan(load_suite(write(tmp_path, BASE), env={}))
    renamed = BASE.replace("suite: t-suite", "suite: other-name")
    b = plan(load_suite(write(tmp_path, renamed, "b.yaml"), env={}))
    assert [r.run_id for r in a] == [r.run_id for r in b]  # config and seed, not the file
    changed = BASE.replace("lr: 1.0e-3", "lr: 2.0e-3")
    c = plan(load_suite(write(tmp_path, changed, "c.yaml"), env={}))
    assert not {r.run_id for r in a} & {r.run_id for r in c}


def test_extends_chain_deep_merges(tmp_path):
    write(tmp_path, BASE, "base.yaml")
    write(tmp_path, "extends: base.yaml\ntrain: {batch_size: 8}\n", "mid.yaml")
    top = write(tmp_path, "extends: mid.yaml\nsuite: top\nseeds: [3]\n", "top.yaml")
    suite = load_suite(top, env={})
    cfg = suite.variants["cwt"].config
    assert suite.name == "top" and suite.head.seeds == [3]
    assert cfg.train.batch_size == 8 and cfg.train.optim.lr == 1e-3  # merged, not replaced


def test_variables_and_defaults():
    unset: list[tuple[str, int, str]] = []
    assert interpolate("${A}/x", {"A": "a"}, "f", 1, unset) == "a/x"
    assert interpolate("${B:-dflt}/x", {}, "f", 1, unset) == "dflt/x"
    assert interpolate("${B:-${A}/y}", {"A": "a"}, "f", 1, unset) == "a/y"
    assert interpolate("${B:-${C:-z}}", {}, "f", 1, unset) == "z"
    assert unset == []
    assert interpolate("${B}/${C:-${D}}", {"C": ""}, "f", 7, unset) == "/"
    assert unset == [("f", 7, "B"), ("f", 7, "D")]


def test_numbers_in_e_notation_are_numbers_as_in_yaml_1_2(tmp_path):
    text = BASE.replace("{lr: 1.0e-3}", "{lr: 3e-4, eps: 1E-8}")
    optim = load_suite(write(tmp_path, text), env={}).variants["softmax"].config.train.optim
    assert (optim.lr, optim.eps) == (3e-4, 1e-8)
    named = BASE.replace("softmax: {}", "softmax: {}\n  1e5: {model: {num_layers: 3}}")  # text
    assert "1e5" in load_suite(write(tmp_path, named, "named.yaml"), env={}).variants


def test_every_unset_variable_is_named_at_once_with_its_file_and_line(tmp_path, capsys):
    write(tmp_path, BASE.replace("seeds:", "note: ${IN_BASE}\nseeds:"), "base.yaml")
    top = write(tmp_path, "extends: base.yaml\ndata: ${DATA}\nlr: ${LR:-${LR_DEFAULT}}\n",
                "top.yaml")
    assert main(["validate", str(top)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 3 variables are not set (DATA, IN_BASE, LR_DEFAULT; set them")
    lines = err.splitlines()[1:]
    assert [line.strip().rsplit(": ", 1)[1] for line in lines] == [
        "${DATA}", "${LR_DEFAULT}", "${IN_BASE}"]  # the file's own first, then its base's
    assert lines[0].strip().startswith(f"{top}:2: ") and "base.yaml:" in lines[2]
    # One alone keeps its one-line form.
    with pytest.raises(UserError, match=r"top.yaml:2: variable \$\{DATA\} is not set \(set "
                       r"it in the environment or write \$\{DATA:-default\}\)"):
        load_suite(top, env={"IN_BASE": "x", "LR_DEFAULT": "1"})


def test_an_unset_variable_in_extends_is_named_before_any_base_is_read(tmp_path):
    top = write(tmp_path, "extends: ${BASE_SUITE}\nlr: ${LR}\n", "top.yaml")
    with pytest.raises(UserError, match=r"2 variables are not set \(BASE_SUITE, LR;"):
        load_suite(top, env={})


def test_budget_split_per_variant(tmp_path):
    text = BASE.replace(
        "  cwt: {objective: cwt, head: embedding_transpose}",
        "  cwt: {objective: cwt, head: embedding_transpose}\n"
        "  cwt_ft:\n    objective: cwt\n    head: finetune\n"
        "    head_finetune: {optim: {lr: 1.0e-4}}\n"
        "    budget: {split: {pretrain: 0.9, head_finetune: 0.1}}")
    suite = load_suite(write(tmp_path, text), env={})
    assert suite.variants["cwt_ft"].budget.split == {"pretrain": 0.9, "head_finetune": 0.1}
    assert suite.variants["cwt_ft"].budget.flops == 1e12
    assert suite.variants["cwt"].budget.split is None


MALFORMED = [
    # (name, transformation of BASE or full text, expected substrings in the message)
    ("unknown top-level key", lambda t: t.replace("seeds:", "seed:"), ["suite.yaml:3", "seed", "unknown key", "did you mean 'seeds'?"]),
    ("unknown nested key", lambda t: t.replace("{lr: 1.0e-3}", "{lrr: 1.0e-3}"), ["suite.yaml:12", "train.optim.lrr", "unknown key", "did you mean 'lr'?", "known: betas, clip,"]),
    ("evaluator option misspelt", lambda t: t.replace("{path: /data/cloze.jsonl}", "{path: /data/cloze.jsonl, batchsize: 8}"), ["suite.yaml:15", "evals[0].lambada.batchsize", "did you mean 'batch_size'?", "known: batch_size, limit, name, path, proxy, task)"]),
    ("resource misspelt", lambda t: t.replace("  softmax: {}", "  softmax: {resources: {gpus_per_nod: 2}}"), ["suite.yaml:17", "variants.softmax.resources.gpus_per_nod", "did you mean 'gpus_per_node'?"]),
    ("wrong type of seeds", lambda t: t.replace("seeds: [0, 1]", "seeds: zero"), ["suite.yaml:3", "seeds"]),
    ("wrong type nested", lambda t: t.replace("batch_size: 4", "batch_size: big"), ["suite.yaml:11", "train.batch_size", "integer"]),
    ("unknown budget unit", lambda t: t.replace("{flops: 1.0e+12}", "{petaflops: 1}"), ["suite.yaml:4", "budget.petaflops", "unknown key", "known: flops, images, seconds, split, steps, tokens)"]),
    ("two budget units", lambda t: t.replace("{flops: 1.0e+12}", "{flops: 1.0e+12, steps: 3}"), ["suite.yaml:4", "budget", "exactly one budget unit"]),
    ("budget unit of another family", lambda t: t.replace("{flops: 1.0e+12}", "{images: 100}"), ["budget.images", "counts tokens"]),
    ("missing extends", lambda t: "extends: nowhere.yaml\n" + t, ["suite.yaml:1", "extends", "not found"]),
    ("variant overrides a field that does not exist", lambda t: t.replace("cwt: {objective: cwt,", "cwt: {objectiv: cwt,"), ["suite.yaml:18", "variants.cwt.objectiv", "unknown key", "did you mean 'objective'?"]),
    ("variant overrides a nested field that does not exist", lambda t: t.replace("  softmax: {}", "  softmax: {model: {layers: 3}}"), ["suite.yaml:17", "variants.softmax.model.layers", "unknown key", "did you mean 'num_layers'?"]),
    ("variant sets a bad value", lambda t: t.replace("cwt: {objective: cwt,", "cwt: {objective: cwtt,"), ["suite.yaml:18", "variants.cwt.objective", "'softmax' or 'cwt'"]),
    ("undefined variable", lambda t: t.replace("${DATA_DIR:-/data}", "${DATA_DIR}"), ["suite.yaml:7", "DATA_DIR", "not set"]),
    ("duplicate variant names", lambda t: t.replace("  cwt: {objective", "  softmax: {objective: softmax}\n  cwt: {objective"), ["suite.yaml:18", "variants.softmax", "duplicate key"]),
    ("broken YAML", lambda t: t.replace("  seq_len: 32", "  seq_len: [32"), ["suite.yaml", "not valid YAML"]),
    ("suite name with a path separator", lambda t: t.replace("suite: t-suite", "suite: a/b"), ["suite.yaml:1", "suite", "no path separators"]),
    ("suite name with ..", lambda t: t.replace("suite: t-suite", "suite: a..b"), ["suite.yaml:1", "suite", "'..'"]),
    ("variant name with a path separator", lambda t: t.replace("  cwt: {", "  ../cwt: {"), ["suite.yaml:17", "variants", "no path separators"]),
    ("unknown family", lambda t: t.replace("family: lm", "family: vision"), ["suite.yaml:2", "family", "unknown family"]),
    ("misspelt family", lambda t: t.replace("family: lm", "family: lmm"), ["suite.yaml:2", "family", "unknown family 'lmm'; did you mean 'lm'?"]),
    ("missing required field", lambda t: t.replace("  seq_len: 32\n", ""), ["suite.yaml:7", "data.seq_len", "required"]),
    ("head incompatible with objective", lambda t: t.replace("  softmax: {}", "  softmax: {head: finetune}"), ["suite.yaml:17", "variants.softmax", "use head 'lm_head'"]),
    ("stages without a split", lambda t: t.replace("  softmax: {}", "  softmax: {objective: cwt, head: finetune, head_finetune: {optim: {lr: 1.0e-4}}}"), ["suite.yaml:4", "budget", "split"]),
    ("split names the wrong stages", lambda t: t.replace("{flops: 1.0e+12}", "{flops: 1.0e+12, split: {pretrain: 0.5, finetune: 0.5}}"), ["suite.yaml:4", "budget.split", "stages"]),
    ("split does not add up", lambda t: t.replace("{flops: 1.0e+12}", "{flops: 1.0e+12, split: {pretrain: 0.5}}"), ["suite.yaml:4", "budget", "add up to 1"]),
    ("baseline is not a variant", lambda t: t.replace("baseline: softmax", "baseline: vanilla"), ["suite.yaml:19", "report.baseline", "not a variant"]),
    ("reference for an unknown variant", lambda t: t + "reference:\n  vanilla: {lambada.acc: 0.2}\n", ["suite.yaml:21", "reference.vanilla", "not a variant"]),
    ("unknown evaluator", lambda t: t.replace("  - lambada: {path", "  - lambda: {path"), ["suite.yaml:15", "evals[0].lambda", "unknown evaluator", "did you mean 'lambada'?"]),
    ("bad evaluator option", lambda t: t.replace("{path: /data/cloze.jsonl}", "{path: /data/cloze.jsonl, limit: -1}"), ["suite.yaml:15", "evals[0].lambada.limit", "greater than 0"]),
    ("two variants with the same config", lambda t: t.replace("  softmax: {}", "  softmax: {}\n  plain: {objective: softmax}"), ["variants.plain", "same config as variant 'softmax'"]),
    ("not a mapping", lambda t: "- just\n- a list\n", ["suite.yaml:1", "mapping"]),
    ("duplicate seeds", lambda t: t.replace("seeds: [0, 1]", "seeds: [1, 1]"), ["suite.yaml:3", "seeds", "distinct"]),
    ("report metric an evaluator does not record", lambda t: t.replace("report: {baseline: softmax}", "report: {baseline: softmax, metrics: [val.nll, lambada.accuracy]}"), ["suite.yaml:19", "report.metrics[1]", "'lambada.accuracy': evaluator 'lambada' records no such metric; did you mean 'lambada.acc'?", "it records lambada.acc, lambada.acc_stderr, lambada.ppl"]),
    ("report metric of no evaluator of the suite", lambda t: t.replace("report: {baseline: softmax}", "report: {baseline: softmax, metrics: [lambda.acc]}"), ["suite.yaml:19", "report.metrics[0]", "no metric of this suite starts with 'lambda'; did you mean 'lambada'?", "start with cwt, lambada, model, train, val"]),
    ("report metric the family does not record", lambda t: t.replace("report: {baseline: softmax}", "report: {baseline: softmax, metrics: [val.nlll]}"), ["report.metrics[0]", "'val.nlll': family 'lm' records no such metric; its metrics match val.nll, val.*.nll"]),
    ("training metric misspelt in a table column", lambda t: t.replace("report: {baseline: softmax}", "report: {baseline: softmax, table: {columns: [lambada.acc, train.tokens_per_sec]}}"), ["report.table.columns[1]", "'train.tokens_per_sec': the training loop records no such metric; its metrics match train.*_per_s.iqr"]),
    ("compute metric misspelt", lambda t: t.replace("report: {baseline: softmax}", "report: {baseline: softmax, compute_metrics: [lambada.pplx]}"), ["report.compute_metrics[0]", "did you mean 'lambada.ppl'?"]),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_suite_exit_2_and_nothing_written(case, tmp_path, capsys, monkeypatch):
    name, transform, expected = case
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATA_DIR", raising=False)
    path = write(tmp_path, transform(BASE))
    for command in (["validate", str(path)], ["plan", str(path)],
                    ["run", str(path), "--results", str(tmp_path / "results")]):
        assert main(command) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
        for piece in expected:
            assert piece in err, f"{name}: {piece!r} not in {err!r}"
    assert not (tmp_path / "results").exists()


def test_circular_extends(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "extends: b.yaml\n" + BASE, "a.yaml")
    write(tmp_path, "extends: a.yaml\nseeds: [0]\n", "b.yaml")
    assert main(["validate", "a.yaml"]) == 2
    err = capsys.readouterr().err
    assert "circular 'extends'" in err and "a.yaml -> b.yaml -> a.yaml" in err


@pytest.mark.parametrize("command", ["plan", "run", "status"])
def test_a_misspelt_variant_is_named_with_the_closest(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    path = write(tmp_path, BASE)
    assert main([command, str(path), "--only", "softmx", "--results", "results"]
                if command != "plan" else [command, str(path), "--only", "softmx"]) == 2
    err = capsys.readouterr().err
    assert "--only softmx: not a variant of t-suite; did you mean 'softmax'?" in err
    assert "variants: softmax, cwt" in err


def test_missing_suite_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "nope.yaml"]) == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err


def test_exit_code_from_the_command_line(tmp_path):
    path = write(tmp_path, BASE.replace("seeds:", "seed:"))
    out = subprocess.run([sys.executable, "-m", "bench.cli", "validate", str(path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown key" in out.stderr and "Traceback" not in out.stderr


def test_shipped_suites_validate(suite_env):
    for path in sorted((ROOT / "suites").rglob("*.yaml")):
        suite = load_suite(path)
        assert suite.variants, path


def test_paper_suite_plans_the_papers_steps(tmp_path, monkeypatch, capsys):
    """Table 3's set-up: 143,000 steps of 1,024 x 2,048 tokens, planned on fake tensors."""
    from support.textgen import narrative_passages

    from bench.text.config import TokenizerConfig
    from bench.text.data import load_tokenizer

    tokenizer_dir = tmp_path / "tokenizer"
    load_tokenizer(TokenizerConfig(train_bpe=300), lambda: narrative_passages(50, seed=0),
                   "passages", tmp_path / "cache").save_pretrained(tokenizer_dir)
    monkeypatch.setenv("PYTHIA_TOKENIZER", str(tokenizer_dir))
    monkeypatch.setenv("OWT2_TRAIN", "/data/owt2.jsonl")
    monkeypatch.setenv("LAMBADA_OPENAI", "/data/lambada_test.jsonl")
    assert main(["plan", str(ROOT / "suites/cwt/pythia70m-lambada.yaml"), "--allow-missing"]) == 0
    out = capsys.readouterr().out
    assert "9 runs" in out
    lines = out.splitlines()
    softmax = [line for line in lines if " softmax " in line]
    cwt_ft = [line for line in lines if " cwt_ft " in line]
    assert len(softmax) == 3 and all("-> 143000 steps" in line for line in softmax)
    assert all("-> 140140 steps" in line and "-> 11440 steps" in line for line in cwt_ft)


def test_table_1_suite_plans_the_papers_token_budgets(tmp_path, monkeypatch, capsys):
    """4.1B tokens at 256 x 128 (vanilla) and 512 x 128 (headless), 8.2B for the long run."""
    from support.textgen import narrative_passages

    from bench.text.config import TokenizerConfig
    from bench.text.data import load_tokenizer

    tokenizer_dir = tmp_path / "tokenizer"
    load_tokenizer(TokenizerConfig(train_bpe=300), lambda: narrative_passages(50, seed=0),
                   "passages", tmp_path / "cache").save_pretrained(tokenizer_dir)
    for var in ("OWT2_TRAIN", "GLUE_DIR"):
        monkeypatch.setenv(var, f"/data/{var.lower()}")
    monkeypatch.setenv("PYTHIA_TOKENIZER", str(tokenizer_dir))
    assert main(["plan", str(ROOT / "suites/cwt/bert-base-glue.yaml"), "--seeds", "0",
                 "--accelerator", "h100", "--allow-missing"]) == 0
    out = capsys.readouterr().out
    steps = {line.split()[1]: line.split("-> ")[1].split()[0]
             for line in out.splitlines() if "-> " in line}
    assert steps == {"softmax": "125122", "cwt": "62561", "cwt_8b": "125122"}
    suite = out.splitlines()[-1].split()  # the totals' last row
    assert suite[:2] == ["suite", "3"] and suite[3] == "1.64e+10"  # FLOPs, tokens, hours
    assert float(suite[4]) == pytest.approx(float(suite[2]) / (989e12 * 0.4) / 3600, rel=1e-2)


def test_a_budget_override_naming_a_unit_replaces_the_unit(tmp_path):
    write(tmp_path, BASE, "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nbudget: {steps: 3}\n", "child.yaml")
    suite = load_suite(child, env={})
    assert suite.head.budget.unit == "steps" and suite.head.budget.flops is None
    text = BASE.replace("  softmax: {}", "  softmax: {budget: {tokens: 4096}}")
    suite = load_suite(write(tmp_path, text, "variant.yaml"), env={})
    assert suite.variants["softmax"].budget.unit == "tokens"
    assert suite.variants["cwt"].budget.unit == "flops"
