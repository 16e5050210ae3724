"""LAMBADA through lm-eval: task definition, input checks, metric math, and CLI agreement."""

import json
import logging
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest
import torch
import yaml
from support.textgen import byte_bpe, narrative_passages, write_jsonl
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from bench.errors import UserError
from bench.evals.adapters import ContinuationScorer
from bench.evals.evaluator import EvalSetting
from bench.evals.lambada import (
    EVALUATOR,
    HFScorer,
    LambadaEvalConfig,
    LambadaResult,
    evaluate_lambada,
    lm_eval_command,
    validate_passages,
    write_task_dir,
)


@pytest.fixture(scope="module")
def tiny_lm() -> tuple[GPTNeoXForCausalLM, PreTrainedTokenizerFast]:
    """A byte-level BPE and a 2-layer GPTNeoX trained for a few steps on the passages' language."""
    corpus = narrative_passages(400, seed=1)
    tokenizer = byte_bpe(corpus)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config)
    ids = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in corpus]
    width = max(map(len, ids))
    batch = torch.tensor([row + [tokenizer.eos_token_id] * (width - len(row)) for row in ids])
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(25):
        rows = batch[step * 16 % len(batch) :][:16]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
    return model, tokenizer


def _cfg(path: Path, **kw: object) -> LambadaEvalConfig:
    return LambadaEvalConfig(path=str(path), name="lambada_mini", batch_size=4, **kw)


def _scorer(tiny_lm, saved: Path | None = None) -> HFScorer:
    model, tokenizer = tiny_lm
    return HFScorer(model, tokenizer, "cpu", saved=saved)


def test_task_yaml_is_lambada_openai_on_a_local_file(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "mini.jsonl", narrative_passages(3, seed=0))
    task_dir = write_task_dir(_cfg(data), tmp_path / "task")
    ours = yaml.safe_load((task_dir / "lambada_mini.yaml").read_text())
    upstream = yaml.safe_load(
        (Path(lm_eval.__file__).parent / "tasks/lambada/lambada_openai.yaml").read_text()
    )
    assert ours["task"] == "lambada_mini"
    assert ours["dataset_path"] == "json"
    assert ours["dataset_kwargs"] == {"data_files": {"test": str(data.resolve())}}
    assert "dataset_name" not in ours
    for key in set(upstream) - {"tag", "task", "dataset_path", "dataset_name"}:
        assert ours[key] == upstream[key], key
    assert set(ours) == set(upstream) - {"tag", "dataset_name"} | {"dataset_kwargs"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "a broken line"', "bad.jsonl:2: not JSON"),
        (
            '{"passage": "no text field here"}',
            'bad.jsonl:2: expected an object with a string field "text"',
        ),
        ('["text", "a list"]', 'bad.jsonl:2: a JSON list; expected LAMBADA JSON lines'),
        ('{"text": "lonely"}', 'bad.jsonl:2: "text" needs at least two space-separated words'),
        ('{"text": "ends in a space "}', 'bad.jsonl:2: "text" needs at least two'),
    ],
)
def test_bad_lines_are_user_errors_naming_file_and_line(
    tmp_path: Path, line: str, message: str
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"text": "a good passage"}) + "\n" + line + "\n")
    with pytest.raises(UserError) as err:
        write_task_dir(_cfg(data), tmp_path / "task")
    assert str(data.resolve()) in str(err.value)
    assert message in str(err.value)
    assert not (tmp_path / "task").exists()


def test_blank_lines_are_skipped_and_empty_files_rejected(tmp_path: Path) -> None:
    data = tmp_path / "gaps.jsonl"
    data.write_text('{"text": "one two"}\n\n{"text": "three four"}\n')
    assert validate_passages(data) == 2
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no passages"):
        validate_passages(tmp_path / "empty.jsonl")
    with pytest.raises(UserError, match="not found"):
        validate_passages(tmp_path / "missing.jsonl")


def _reference_scores(
    model: GPTNeoXForCausalLM, tokenizer: PreTrainedTokenizerFast, text: str
) -> tuple[float, bool]:
    """Target log-likelihood and greedy match, tokenized as lm-eval's HFLM does: the target's
    tokens are those of context+target beyond the context's own encoding."""
    context, word = text.rsplit(" ", 1)
    context_ids = tokenizer(context)["input_ids"]
    target_ids = tokenizer(context + " " + word)["input_ids"][len(context_ids) :]
    ids = torch.tensor([context_ids + target_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids[:, :-1]).logits[0], dim=-1)
    picked = logprobs[-len(target_ids) :]
    target = torch.tensor(target_ids)
    ll = picked.gather(1, target[:, None]).sum().item()
    return ll, bool((picked.argmax(dim=-1) == target).all())


def test_metrics_match_a_direct_computation(tmp_path: Path, tiny_lm) -> None:
    model, tokenizer = tiny_lm
    texts = narrative_passages(12, seed=7)
    data = write_jsonl(tmp_path / "mini.jsonl", texts)
    model.train()
    result = evaluate_lambada(_scorer(tiny_lm), _cfg(data), workdir=tmp_path)

    assert isinstance(result, LambadaResult)
    assert result.task == "lambada_mini"
    assert result.n == len(texts)
    assert model.training, "the model's training mode is restored"
    assert all(p.grad is None for p in model.parameters())

    model.eval()
    reference = [_reference_scores(model, tokenizer, t) for t in texts]
    model.train()
    lls = [ll for ll, _ in reference]
    greedy = [g for _, g in reference]
    assert 0 < sum(greedy) < len(greedy), "the check needs both hits and misses"
    for sample, text, (ll, hit) in zip(result.samples, texts, reference, strict=True):
        assert sample["text"] == text
        assert sample["context"] + sample["target"] == text
        assert sample["target"] == " " + text.split(" ")[-1]
        assert sample["loglikelihood"] == pytest.approx(ll, rel=1e-5, abs=1e-5)
        assert sample["is_greedy"] == hit
    assert [s["doc_id"] for s in result.samples] == list(range(len(texts)))

    acc = sum(greedy) / len(greedy)
    assert result.metrics["acc"] == pytest.approx(acc, abs=1e-12)
    spread = math.sqrt(sum((g - acc) ** 2 for g in greedy) / (len(greedy) - 1))
    assert result.metrics["acc_stderr"] == pytest.approx(spread / math.sqrt(len(greedy)))
    assert result.metrics["ppl"] == pytest.approx(math.exp(-sum(lls) / len(lls)), rel=1e-5)
    assert 0 < result.metrics["ppl_stderr"] < result.metrics["ppl"]
    assert result.lm_eval_config["lm_eval_version"] == lm_eval.__version__
    assert result.lm_eval_config["task_config"]["output_type"] == "loglikelihood"


def test_limit_scores_the_first_passages_quietly(
    tmp_path: Path, tiny_lm, capfd: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(tmp_path / "mini.jsonl", narrative_passages(10, seed=3))
    offline_before = os.environ.get("HF_HUB_OFFLINE")
    result = evaluate_lambada(_scorer(tiny_lm), _cfg(data, limit=4), workdir=tmp_path)
    assert result.n == 4
    assert [s["doc_id"] for s in result.samples] == [0, 1, 2, 3]
    assert result.lm_eval_config["limit"] == 4
    json.dumps(result.lm_eval_config)  # recorded as-is in run files
    assert os.environ.get("HF_HUB_OFFLINE") == offline_before
    assert capfd.readouterr().out == "", "lm-eval's chatter stays off stdout"


def test_installed_task_without_cached_data_says_what_to_do(
    tmp_path: Path, tiny_lm, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = LambadaEvalConfig(task="lambada_openai")
    with pytest.raises(UserError, match=r"give 'path'.*or populate the cache"):
        evaluate_lambada(_scorer(tiny_lm), cfg, workdir=tmp_path)


def test_unknown_installed_task_is_a_user_error(tmp_path: Path, tiny_lm) -> None:
    cfg = LambadaEvalConfig(task="lambada_nonexistent")
    with pytest.raises(UserError, match="'lambada_nonexistent' is not a task installed"):
        evaluate_lambada(_scorer(tiny_lm), cfg, workdir=tmp_path)


def test_command_line(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "mini.jsonl", narrative_passages(3, seed=0))
    cmd = lm_eval_command(tmp_path / "model", _cfg(data, limit=2), tmp_path / "task")
    assert cmd[0] == "lm_eval"
    pairs = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert pairs["--model"] == "hf"
    assert pairs["--model_args"] == f"pretrained={(tmp_path / 'model').resolve()}"
    assert pairs["--include_path"] == str((tmp_path / "task").resolve())
    assert pairs["--tasks"] == "lambada_mini"
    assert pairs["--batch_size"] == "4"
    assert pairs["--limit"] == "2"
    installed = lm_eval_command(tmp_path / "m", LambadaEvalConfig(task="lambada_openai"), None)
    assert "--include_path" not in installed
    assert installed[installed.index("--tasks") + 1] == "lambada_openai"


def test_evaluator_declares_its_config_adapter_metrics_and_inputs(tmp_path: Path) -> None:
    from bench.evals.registry import get_evaluator

    assert get_evaluator("lambada") is EVALUATOR
    assert EVALUATOR.config_model is LambadaEvalConfig
    assert EVALUATOR.needs is ContinuationScorer
    assert (EVALUATOR.higher_is_better("acc"), EVALUATOR.higher_is_better("ppl")) == (True, False)
    assert EVALUATOR.higher_is_better("acc_stderr") is None
    assert EVALUATOR.higher_is_better("n") is None
    data = tmp_path / "mini.jsonl"
    assert EVALUATOR.inputs(_cfg(data), None) == {"path": str(data)}
    assert EVALUATOR.inputs(LambadaEvalConfig(task="lambada_openai"), "/data") == {}


def test_evaluator_gives_the_numbers_of_evaluate_lambada(
    tmp_path: Path, tiny_lm, caplog: pytest.LogCaptureFixture
) -> None:
    model, _ = tiny_lm
    data = write_jsonl(tmp_path / "mini.jsonl", narrative_passages(12, seed=7))
    cfg = _cfg(data)
    scorer = _scorer(tiny_lm, saved=tmp_path / "model")
    assert isinstance(scorer, ContinuationScorer)
    model.train()
    setting = EvalSetting(workdir=tmp_path / "lambada", log=logging.getLogger("test.lambada"))
    direct = evaluate_lambada(scorer, cfg, workdir=setting.workdir)  # the task file's path too
    with caplog.at_level(logging.INFO, logger=setting.log.name):
        result = EVALUATOR.evaluate(cfg, scorer, setting)

    assert result.metrics == direct.metrics | {"n": 12.0}
    assert sorted(result.metrics) == sorted(EVALUATOR.metrics(cfg))  # what a report may name
    assert result.samples == {"": direct.samples}
    assert result.provenance == {"lm_eval": direct.lm_eval_config}
    assert result.curves == {}
    assert (tmp_path / "lambada" / "lambada_task" / "lambada_mini.yaml").is_file()
    assert model.training and next(model.parameters()).device.type == "cpu"
    [line] = [r.getMessage() for r in caplog.records if r.name == setting.log.name]
    expected = lm_eval_command(tmp_path / "model", cfg, tmp_path / "lambada" / "lambada_task")
    assert line == f"the same numbers from the lm_eval command: {shlex.join(expected)}"

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=setting.log.name):
        EVALUATOR.evaluate(cfg, _scorer(tiny_lm), setting)
    assert not [r for r in caplog.records if r.name == setting.log.name], (
        "a model never saved has no lm_eval command")


def test_scorer_puts_the_model_back_even_after_an_error(
    tiny_lm, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = tiny_lm
    moves: list[str] = []
    move = type(model).to

    def spy(self: GPTNeoXForCausalLM, device: str | torch.device) -> GPTNeoXForCausalLM:
        moves.append(str(device))
        return move(self, device)

    monkeypatch.setattr(type(model), "to", spy)
    scorer = HFScorer(model, tiny_lm[1], "cpu")
    model.train()
    with pytest.raises(RuntimeError, match="inside"), scorer.lm_eval_model(batch_size=2) as lm:
        assert not model.training
        assert lm.model is model and lm.batch_size_per_gpu == 2
        assert lm.tokenizer is not tiny_lm[1], "lm-eval gets its own copy of the tokenizer"
        raise RuntimeError("inside")
    assert model.training
    assert moves == ["cpu", "cpu"], "moved to the scorer's device, then back to where it was"
    model.eval()
    with scorer.lm_eval_model(batch_size=2):
        pass
    assert not model.training, "eval mode stays eval mode"


@pytest.mark.slow
def test_cli_on_saved_model_gives_identical_scores(tmp_path: Path, tiny_lm) -> None:
    model, tokenizer = tiny_lm
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = write_jsonl(tmp_path / "lambada.jsonl", narrative_passages(30, seed=11))
    cfg = _cfg(data)
    ours = evaluate_lambada(_scorer(tiny_lm), cfg, workdir=tmp_path / "work")

    task_dir = write_task_dir(cfg, tmp_path / "task")
    cmd = lm_eval_command(model_dir, cfg, task_dir, device="cpu", output_path=tmp_path / "out")
    cmd[0] = str(Path(sys.executable).with_name("lm_eval"))
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    [results_file] = (tmp_path / "out").rglob("results_*.json")
    theirs = json.loads(results_file.read_text())["results"]["lambada_mini"]
    assert ours.n == 30
    assert ours.metrics["acc"] == pytest.approx(theirs["acc,none"], abs=1e-9)
    assert ours.metrics["ppl"] == pytest.approx(theirs["perplexity,none"], rel=1e-9)
    assert ours.metrics["ppl_stderr"] == pytest.approx(theirs["perplexity_stderr,none"], rel=1e-9)
    [samples_file] = (tmp_path / "out").rglob("samples_lambada_mini_*.jsonl")
    logged = sorted(
        (json.loads(line) for line in samples_file.read_text().splitlines()),
        key=lambda s: s["doc_id"],
    )
    # lm-eval writes the logged responses as strings
    assert [float(s["filtered_resps"][0][0]) for s in logged] == pytest.approx(
        [s["loglikelihood"] for s in ours.samples], rel=1e-9
    )


class _Planted:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _saved_config_only(model_dir: Path, tiny_lm) -> dict[str, torch.Tensor]:
    model, tokenizer = tiny_lm
    model.config.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return dict(model.state_dict())


def test_cli_refuses_a_planted_pickle_without_running_it(
    tmp_path: Path, tiny_lm, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.cli import main

    model_dir, marker = tmp_path / "model", tmp_path / "ran"
    weights = _saved_config_only(model_dir, tiny_lm)
    torch.save(weights | {"extra": _Planted(marker)}, model_dir / "pytorch_model.bin")
    data = write_jsonl(tmp_path / "mini.jsonl", narrative_passages(3, seed=0))
    code = main(["eval", "lambada", "--model", str(model_dir), "--path", str(data)])
    err = capsys.readouterr().err
    assert code == 2
    assert not marker.exists()
    assert err.startswith(f"error: {model_dir / 'pytorch_model.bin'}: cannot load the model")
    assert "objects other than tensors" in err and "Traceback" not in err


def test_cli_names_a_damaged_weights_file(tmp_path: Path, tiny_lm) -> None:
    from bench.evals.saved_model import load_saved_model

    model, tokenizer = tiny_lm
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match=rf"^{weights}: cannot load the model: \w+"):
        load_saved_model(model_dir)
    weights.unlink()
    with pytest.raises(UserError, match=r"no weights \(expected one of model\.safetensors"):
        load_saved_model(model_dir)
