"""Reference variants: a checkpoint trained elsewhere (a released model) scored by the suite's
evaluators beside the trained variants, training nothing; its identity is the checkpoint's
contents; every table and figure of the report marks it."""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from support.textgen import TINY_LM, narrative_passages, write_jsonl, write_lm_data, write_word_sst2

from bench.cli import main
from bench.config.plan import plan
from bench.config.suite import load_suite

TOY = """\
suite: toy-ref
family: toy
seeds: [0, 1]
budget: {{steps: {steps}}}
evals:
  - glue: {{path: {root}/glue, tasks: [sst2], finetune: {{epochs: 2}}}}
report: {{baseline: narrow, metrics: [glue.score, val.mse]}}
variants:
  narrow: {{}}
  released: {{checkpoint: {checkpoint}{extra}}}
"""


def _toy_weights(path: Path, width: int = 8, scale: float = 1.0) -> Path:
    """A toy model's weights, as a model trained elsewhere would leave them."""
    torch.save({"weight": torch.full((1, width), scale)}, path)
    return path


def toy_suite(root: Path, checkpoint: Path, steps: str = "20", extra: str = "",
              name: str = "toy.yaml") -> Path:
    write_word_sst2(root / "glue")
    suite = root / name
    suite.write_text(TOY.format(root=root, checkpoint=checkpoint, steps=steps, extra=extra))
    return suite


def _ids(suite: Path, *overrides: str) -> dict[tuple[str, int], str]:
    return {(r.variant.name, r.seed): r.run_id
            for r in plan(load_suite(suite, overrides=overrides))}


def test_a_reference_is_identified_by_its_checkpoints_contents(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    weights = _toy_weights(tmp_path / "released.pt")
    suite = toy_suite(tmp_path, weights)
    ids = _ids(suite)
    runs = {r.run_id: r for r in plan(load_suite(suite))}
    reference = runs[ids[("released", 0)]]
    assert not reference.variant.trains
    assert set(reference.inputs) == {"checkpoint", "evals.glue.path"}
    assert reference.resolved["checkpoint"] == str(weights)
    assert "budget" not in reference.resolved  # it trains nothing
    assert ids[("released", 0)] != ids[("released", 1)]  # GLUE fine-tunes with the seed

    # the same bytes elsewhere: the same runs
    moved = shutil.copy(weights, tmp_path / "elsewhere.pt")
    assert _ids(toy_suite(tmp_path, Path(moved), name="moved.yaml")) == ids
    # a training setting is not what scoring reads: the reference keeps its id
    lr = _ids(suite, "optim.lr=0.1")
    assert lr[("released", 0)] == ids[("released", 0)] and lr[("narrow", 0)] != ids[("narrow", 0)]
    # what scoring reads (the toy's width) and other contents are another reference
    wide = _ids(toy_suite(tmp_path, weights, extra=", width: 8", name="w8.yaml"))
    assert wide[("released", 0)] == ids[("released", 0)]  # 8 is the default width
    wide = _ids(toy_suite(tmp_path, weights, extra=", width: 16", name="w16.yaml"))
    assert wide[("released", 0)] != ids[("released", 0)]
    _toy_weights(weights, scale=2.0)
    assert _ids(suite)[("released", 0)] != ids[("released", 0)]


@pytest.mark.parametrize(("change", "where", "message"), [
    ("{checkpoint: [a.pt]}", "variants.released.checkpoint",
     "expected the path of a toy weights file"),
    ("{checkpoint: X, budget: {steps: 5}}", "variants.released.budget",
     "a reference variant (checkpoint) trains nothing: it takes no budget"),
])
def test_a_malformed_reference_is_refused_naming_its_line(toy, tmp_path, capsys, change, where,
                                                          message):
    suite = toy_suite(tmp_path, Path("x.pt"))
    suite.write_text(suite.read_text().replace("{checkpoint: x.pt}", change))
    assert main(["validate", str(suite)]) == 2
    err = capsys.readouterr().err
    assert f"{suite}:10: {where}: {message}" in err and "Traceback" not in err


def test_a_reference_is_neither_the_baseline_nor_a_sweeps_variant(toy, tmp_path, capsys):
    suite = toy_suite(tmp_path, Path("x.pt"))
    suite.write_text(suite.read_text().replace("baseline: narrow", "baseline: released"))
    assert main(["validate", str(suite)]) == 2
    assert "report.baseline: 'released' is a reference variant" in capsys.readouterr().err
    suite = toy_suite(tmp_path, Path("x.pt"), name="sweep.yaml")
    suite.write_text(suite.read_text() + "sweep:\n  variant: released\n  trials: 2\n"
                     "  objective: {metric: val.mse, direction: minimize}\n"
                     "  space: {optim.lr: {type: float, low: 0.01, high: 0.1}}\n")
    assert main(["validate", str(suite)]) == 2
    assert "sweep.variant: variant 'released' scores a checkpoint and trains nothing" \
        in capsys.readouterr().err


def test_plan_shows_a_reference_spending_nothing_and_stops_on_a_missing_one(toy, tmp_path,
                                                                           capsys):
    weights = _toy_weights(tmp_path / "released.pt")
    suite = toy_suite(tmp_path, weights)
    assert main(["plan", str(suite)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if " released " in line]
    assert len(rows) == 2 and all("reference" in r and "trains nothing" in r for r in rows)
    assert f"input checkpoint: {weights}" in out
    totals = {line.split()[0]: line.split() for line in out.split("\ntotal")[1].splitlines()[1:]}
    assert totals["released"][1:3] == ["2", "0"]  # two runs, no FLOPs
    assert totals["suite"][2] == totals["narrow"][2]
    weights.unlink()
    assert main(["plan", str(suite)]) == 2
    assert f"error: input checkpoint: {weights} not found (variant released)" \
        in capsys.readouterr().err
    assert main(["run", str(suite), "--results", str(tmp_path / "results")]) == 2
    assert not (tmp_path / "results").exists()  # nothing started


def test_a_reference_is_scored_beside_the_trained_runs_and_marked_in_the_report(toy, tmp_path,
                                                                              capsys):
    weights = _toy_weights(tmp_path / "released.pt")
    suite = toy_suite(tmp_path, weights, steps="[10, 20]")
    suite.write_text(suite.read_text() + "reference:\n  released: {glue.score: 0.875}\n")
    results, out = tmp_path / "results", tmp_path / "reports"
    assert main(["run", str(suite), "--only", "narrow", "--results", str(results),
                 "--no-progress"]) == 0
    assert main(["report", str(suite), "--results", str(results), "--out", str(out)]) == 0
    assert ">released (reference)<" in (out / "toy-ref.html").read_text()  # not scored yet
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    with sqlite3.connect(results / "index.sqlite") as con:
        states = con.execute("SELECT variant, state, COUNT(*) FROM runs GROUP BY variant")
        assert sorted(states) == [("narrow", "finished", 4), ("released", "finished", 2)]
        metrics = {m for (m,) in con.execute(
            "SELECT DISTINCT metric FROM metrics JOIN runs USING (run_id) "
            "WHERE runs.variant = 'released'")}
    assert {"val.mse", "glue.score"} <= metrics
    assert not {m for m in metrics if m.startswith(("train.", "curve."))}  # it trained nothing
    run_dir = next(p.parent for p in (results / "toy-ref").glob("*/config.json")
                   if "checkpoint" in json.loads(p.read_text()))
    assert json.loads((run_dir / "config.json").read_text())["checkpoint"] == str(weights)
    assert not (run_dir / "checkpoints").exists()
    # the model in the file, scored as the toy family scores a trained one: 8 ones against
    # the truth, on the held-out rows of its seed
    truth = torch.randn(8, generator=torch.Generator().manual_seed(0))
    recorded = json.loads((run_dir / "metrics.json").read_text())
    seed = json.loads((run_dir / "config.json").read_text())["seed"]
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(seed * 1_000_003 + 10**9))
    assert recorded["val.mse"] == pytest.approx(float(((x.sum(1) - x @ truth) ** 2).mean()))

    capsys.readouterr()
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 6
    assert main(["report", str(suite), "--results", str(results), "--out", str(out)]) == 0
    html = (out / "toy-ref.html").read_text()
    assert html.count(">released (reference)<") >= 3  # key metrics, per-run values, provenance
    assert ">released<" not in html
    row = html.split(">released (reference)<")[1].split("</tr>")[0]  # the key metrics' row
    assert ">0.8750<" in row  # the paper's number for it, beside its own
    figures = html.split("<svg")[1:]
    by_title = {title: next(f for f in figures if title in f)
                for title in ("val.mse against training steps", "glue.score")}
    assert all("released (reference)" in f for f in by_title.values())  # dotted level, axis
    assert "(reference): a checkpoint trained elsewhere" in html  # what the mark means


LM = """\
extends: {base}
suite: lm-ref
seeds: [0]
budget: {{steps: 2}}
data: {{train: {data}/train.jsonl}}
evals:
  - lambada: {{path: {data}/cloze.jsonl, name: cloze_proxy, proxy: true, batch_size: 8}}
variants:
  softmax: {{}}
  released: {{checkpoint: {checkpoint}}}
report: {{baseline: softmax, metrics: [lambada.acc, lambada.ppl, model.total_params]}}
"""


def _saved_lm(folder: Path) -> Path:
    """A small GPTNeoX of another shape and tokenizer than the suite trains, saved as a released
    model is: weights, config and tokenizer in one folder."""
    from support.textgen import byte_bpe
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tokenizer = byte_bpe(narrative_passages(200, seed=3), vocab_size=300)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_released_lm_scores_as_bench_eval_lambada_scores_it(tmp_path, capsys, monkeypatch):
    from transformers import GPTNeoXForCausalLM

    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    data, released = write_lm_data(tmp_path / "data"), _saved_lm(tmp_path / "released")
    suite = tmp_path / "lm.yaml"
    suite.write_text(LM.format(base=TINY_LM, data=data, checkpoint=released))
    runs = {r.variant.name: r for r in plan(load_suite(suite))}
    assert "data.train" in runs["softmax"].inputs
    assert set(runs["released"].inputs) == {"checkpoint", "evals.lambada.path"}
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    stored = json.loads(
        (results / "lm-ref" / runs["released"].run_id / "metrics.json").read_text())
    assert stored["model.total_params"] == sum(
        p.numel() for p in GPTNeoXForCausalLM.from_pretrained(released).parameters())
    scored = tmp_path / "eval.json"
    assert main(["eval", "lambada", "--model", str(released), "--path",
                 str(data / "cloze.jsonl"), "--name", "cloze_proxy", "--batch-size", "8",
                 "--json", str(scored)]) == 0
    standalone = json.loads(scored.read_text())
    assert standalone["metrics"]["acc"] == stored["lambada.acc"]
    assert standalone["metrics"]["ppl"] == stored["lambada.ppl"]
    samples = (results / "lm-ref" / runs["released"].run_id / "samples_lambada.jsonl")
    assert [json.loads(line) for line in samples.read_text().splitlines()] == \
        standalone["samples"]
    assert main(["report", str(suite), "--results", str(results),
                 "--out", str(tmp_path / "reports")]) == 0
    assert ">released (reference)<" in (tmp_path / "reports" / "lm-ref.html").read_text()


@pytest.mark.slow
def test_a_released_bert_is_fine_tuned_and_scored_on_glue(tmp_path, monkeypatch):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    write_word_sst2(tmp_path / "glue")
    words = ["the", "was", "good", "bad", "film", "plot", "cast", "score", "pace"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    released = tmp_path / "bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64)).save_pretrained(released)
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(released)
    write_jsonl(tmp_path / "train.jsonl", narrative_passages(50, seed=1))
    suite = tmp_path / "encoder.yaml"
    suite.write_text(f"""\
suite: encoder-ref
family: encoder
seeds: [0]
budget: {{steps: 2}}
model: {{preset: bert-tiny}}
data: {{train: {tmp_path}/train.jsonl, seq_len: 32, tokenizer: {{train_bpe: 300}}}}
train: {{batch_size: 4, optim: {{lr: 1.0e-3}}}}
objective: softmax
evals:
  - glue: {{path: {tmp_path}/glue, tasks: [sst2], proxy: true,
            finetune: {{epochs: 1, batch_size: 16, max_seq_len: 32}}}}
variants:
  released: {{checkpoint: {released}}}
""")
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    (metrics,) = [json.loads(p.read_text()) for p in results.glob("encoder-ref/*/metrics.json")]
    assert 0 <= metrics["glue.sst2.acc"] <= 1 and metrics["glue.sst2.finetune_steps"] > 0
    assert metrics["model.total_params"] == sum(
        p.numel() for p in BertModel.from_pretrained(released).parameters())
    assert not [m for m in metrics if m.startswith("train.")]


FACES = """\
suite: faces-ref
family: faces
seeds: [0]
budget: {{images: 8}}
model: {{width: 0.125}}
data: {{root: {root}}}
evals:
  - wider: {{modes: [single], short: 160, long: 240}}
variants:
  released: {{checkpoint: {weights}{model}}}
"""


@pytest.mark.slow
def test_ssh_weights_are_scored_on_wider_and_a_misfit_is_named(faces_root, tmp_path, capsys):
    from bench.faces.config import SSHModelConfig
    from bench.faces.model import build_ssh

    torch.manual_seed(0)
    weights = tmp_path / "ssh.pt"
    torch.save(build_ssh(SSHModelConfig(width=0.125)).state_dict(), weights)
    suite, results = tmp_path / "faces.yaml", tmp_path / "results"
    suite.write_text(FACES.format(root=faces_root, weights=weights, model=""))
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    (run_dir,) = [p.parent for p in results.glob("faces-ref/*/metrics.json")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {f"wider.single.{s}" for s in ("easy", "medium", "hard")} <= set(metrics)
    assert metrics["model.total_params"] == sum(
        p.numel() for p in build_ssh(SSHModelConfig(width=0.125)).parameters())
    capsys.readouterr()
    assert main(["eval", "wider", "--gt", str(faces_root / "eval_tools" / "ground_truth"),
                 "--pred", str(run_dir / "wider" / "predictions_single")]) == 0
    out = capsys.readouterr().out
    assert f"wider.easy.ap = {metrics['wider.single.easy']:.6f}" in out

    # weights of another architecture than the variant builds: the run fails naming the file
    misfit = tmp_path / "misfit.yaml"
    misfit.write_text(FACES.format(root=faces_root, weights=weights,
                                   model=", model: {width: 0.25}").replace(
        "faces-ref", "faces-misfit"))
    assert main(["run", str(misfit), "--results", str(results), "--no-progress"]) == 1
    (state,) = [json.loads(p.read_text()) for p in results.glob("faces-misfit/*/state.json")]
    assert f"{weights}: the weights do not fit the SSH" in state["reason"]
    assert "variants.released.checkpoint" in state["reason"]


class _Planted:
    """An object a pickle runs code to rebuild: what a weights file must never hold."""

    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_a_checkpoint_is_read_as_tensors_only_and_a_wrong_one_is_named(tmp_path):
    from bench.errors import UserError
    from bench.evals.saved_model import load_saved_model
    from bench.faces.config import SSHModelConfig
    from bench.faces.model import build_ssh, load_ssh_weights

    model, named = build_ssh(SSHModelConfig(width=0.125)), "variants.released.checkpoint"
    planted = tmp_path / "planted.pt"
    torch.save({"weight": _Planted()}, planted)
    with pytest.raises(UserError, match=rf"^{planted}: cannot load the weights \({named}\): "
                                        "refused: it holds objects other than tensors"):
        load_ssh_weights(model, planted, named)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(UserError, match=r"expected a state dict of SSH.s tensors .* got a list"):
        load_ssh_weights(model, listed, named)
    wider = tmp_path / "wider.pt"
    torch.save(build_ssh(SSHModelConfig(width=0.25)).state_dict(), wider)
    with pytest.raises(UserError, match=r"do not fit .*backbone\.conv1_1\.weight \(16, 3, 3, 3\), "
                                        r"expected \(8, 3, 3, 3\)"):
        load_ssh_weights(model, wider, named)
    with pytest.raises(UserError, match=rf"^{named} {wider}: not a saved Hugging Face model "
                                        "folder"):
        load_saved_model(wider, named=named)
