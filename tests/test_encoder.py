"""The encoder study's parts: MLM corruption, the four objectives, FLOP plans, GLUE fine-tuning."""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from support.textgen import narrative_passages

from bench.encoder.config import EncoderConfig, MaskingConfig
from bench.encoder.family import FAMILY
from bench.encoder.finetune import (
    BertPairClassifier,
    _truncate_pair,
    balanced_class_weights,
    frame_examples,
)
from bench.encoder.masking import MaskedBatch, Vocabulary, mask_rows, step_generator
from bench.encoder.model import build_encoder, count_parameters, trained_parameters
from bench.encoder.objectives import encode, mlm_loss, nce_loss
from bench.evals.adapters import Example, FinetuneConfig, PairClassifier
from bench.evals.evaluator import EvalResult, EvalSetting
from bench.evals.glue import EVALUATOR, GlueEvalConfig
from bench.text.config import TokenizerConfig
from bench.text.cwt import cwt_loss
from bench.text.data import load_tokenizer
from bench.training.flops import count_flops

SPECIAL = (0, 1, 2, 3, 4)  # pad, cls, sep, mask, eos
VOCAB = Vocabulary(size=500, mask_id=3, special_ids=SPECIAL)


def rows_with_boundaries(n: int, length: int, seed: int) -> torch.Tensor:
    """[CLS] ... [SEP] rows of ordinary tokens with a document boundary ([SEP]) in half of them."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(5, VOCAB.size, (n, length), generator=g)
    rows[:, 0], rows[:, -1] = 1, 2
    rows[::2, length // 3] = 2
    return rows


def config(objective: str, **extra: object) -> EncoderConfig:
    return EncoderConfig.model_validate({
        "model": {"preset": "bert-tiny", "hidden_size": 32, "num_heads": 2,
                  "intermediate_size": 64, "context": 64},
        "data": {"train": "unused.jsonl", "seq_len": 32, "tokenizer": {"train_bpe": VOCAB.size}},
        "train": {"batch_size": 4, "optim": {"lr": 1e-3}},
        "objective": objective, **extra})


# --- masking -------------------------------------------------------------------------------

def test_masking_statistics_on_a_large_sample():
    rows = rows_with_boundaries(4096, 128, seed=0)
    batch = mask_rows(rows, VOCAB, MaskingConfig(), step_generator(0, 0))
    selected = torch.zeros(rows.numel(), dtype=torch.bool)
    selected[batch.positions] = True
    selected = selected.view_as(rows)
    # Exactly ceil(0.15 x 126) = 19 predictions in every row, never on a special token.
    assert (selected.sum(1) == 19).all()
    assert not torch.isin(rows[selected], torch.tensor(SPECIAL)).any()
    assert torch.equal(batch.targets, rows.flatten()[batch.positions])
    # Uniform over the ordinary positions: each is chosen with probability 19/126 (or 19/125).
    rate = selected[1::2, 1:-1].float().mean(0)  # rows without an inner boundary
    assert rate.sub(19 / 126).abs().max() < 5 * math.sqrt(19 / 126 * (1 - 19 / 126) / 2048)
    k = len(batch.targets)
    new = batch.inputs.flatten()[batch.positions]
    masked = (new == VOCAB.mask_id).float().mean().item()
    kept = (new == batch.targets).float().mean().item()
    randomised = 1 - masked - kept
    sigma = math.sqrt(0.1 * 0.9 / k)
    assert abs(masked - 0.8) < 5 * math.sqrt(0.16 / k)
    assert abs(randomised - 0.1 * (1 - 1 / 495)) < 5 * sigma  # a random draw can hit the target
    assert abs(kept - 0.1 - 0.1 / 495) < 5 * sigma
    assert not torch.isin(new[new != VOCAB.mask_id], torch.tensor(SPECIAL)).any()
    # Positions that were not selected are untouched.
    assert torch.equal(batch.inputs[~selected], rows[~selected])


def test_masking_is_a_function_of_seed_and_step():
    rows = rows_with_boundaries(8, 32, seed=1)
    a = mask_rows(rows, VOCAB, MaskingConfig(), step_generator(3, 7))
    b = mask_rows(rows, VOCAB, MaskingConfig(), step_generator(3, 7))
    c = mask_rows(rows, VOCAB, MaskingConfig(), step_generator(3, 8))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.positions, c.positions)


def test_split_keeps_each_rows_targets():
    rows = rows_with_boundaries(10, 32, seed=2)
    batch = mask_rows(rows, VOCAB, MaskingConfig(), step_generator(0, 1))
    parts = batch.split(4)
    assert [p.inputs.shape[0] for p in parts] == [4, 4, 2]
    for i, part in enumerate(parts):
        restored = part.inputs.flatten().clone()
        restored[part.positions] = part.targets
        assert torch.equal(restored.view_as(part.inputs), rows[4 * i: 4 * i + 4])


# --- objectives ----------------------------------------------------------------------------

@pytest.fixture
def batch() -> MaskedBatch:
    return mask_rows(rows_with_boundaries(4, 32, seed=3), VOCAB, MaskingConfig(),
                     step_generator(0, 0))


def test_softmax_objective_is_huggingface_mlm_loss(batch):
    cfg = config("softmax")
    torch.manual_seed(0)
    model = build_encoder(cfg.model, VOCAB.size, 0, "softmax").eval()
    labels = torch.full(batch.inputs.shape, -100).flatten()
    labels[batch.positions] = batch.targets
    reference = model(input_ids=batch.inputs, labels=labels.view_as(batch.inputs)).loss
    torch.testing.assert_close(mlm_loss(model, batch, cfg), reference)
    # The head on every position (the forward's own way): same loss, more FLOPs.
    everywhere = config("softmax", head_positions="all")
    torch.testing.assert_close(mlm_loss(model, batch, everywhere), reference)
    masked_flops = count_flops(lambda: mlm_loss(model, batch, cfg))
    all_flops = count_flops(lambda: mlm_loss(model, batch, everywhere))
    hidden, vocab, k = 32, VOCAB.size, len(batch.targets)
    head = 2 * hidden * hidden + 2 * hidden * vocab  # transform + decoder per position
    assert all_flops - masked_flops == head * (batch.inputs.numel() - k)


def test_cwt_objective_scores_masked_positions_against_input_embeddings(batch):
    cfg = config("cwt")
    torch.manual_seed(0)
    model = build_encoder(cfg.model, VOCAB.size, 0, "cwt").eval()
    hidden = model.bert(batch.inputs).last_hidden_state
    chosen = torch.zeros(batch.inputs.numel(), dtype=torch.bool)
    chosen[batch.positions] = True
    at_masks = hidden[chosen.view_as(batch.inputs)]
    expected = cwt_loss(at_masks, batch.targets, model.bert.embeddings.word_embeddings.weight)
    torch.testing.assert_close(mlm_loss(model, batch, cfg), expected)
    # No head: the MLM transform is neither used nor trained.
    mlm_loss(model, batch, cfg).backward()
    assert model.cls.predictions.transform.dense.weight.grad is None
    trained = {id(p) for p in trained_parameters(model, "cwt")}
    assert id(model.cls.predictions.transform.dense.weight) not in trained


def test_ce_plus_cwt_is_the_weighted_sum(batch):
    mixed = config("ce+cwt", mix={"ce": 0.5, "cwt": 2.0})
    torch.manual_seed(0)
    model = build_encoder(mixed.model, VOCAB.size, 0, "ce+cwt").eval()
    expected = 0.5 * mlm_loss(model, batch, config("softmax")) + 2.0 * mlm_loss(
        model, batch, config("cwt"))
    torch.testing.assert_close(mlm_loss(model, batch, mixed), expected)


def test_nce_loss_matches_the_formula_term_by_term():
    torch.manual_seed(0)
    k_pos, dim, vocab, negatives = 6, 8, 20, 5
    hidden, output = torch.randn(k_pos, dim), torch.nn.Linear(dim, vocab)
    targets = torch.randint(vocab, (k_pos,))
    q = torch.rand(vocab) + 0.1
    log_q = (q / q.sum()).log()
    torch.manual_seed(7)
    loss = nce_loss(hidden, targets, output, log_q, negatives)
    torch.manual_seed(7)
    noise = torch.multinomial(log_q.exp(), negatives, replacement=True)

    @torch.no_grad()
    def logit(i: int, w: int) -> float:
        s = float(hidden[i] @ output.weight[w] + output.bias[w])
        return s - math.log(negatives * float(log_q[w].exp()))

    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x))

    total = 0.0
    for i in range(k_pos):
        total -= log_sigmoid(logit(i, int(targets[i])))
        total -= sum(log_sigmoid(-logit(i, int(n))) for n in noise)
    assert float(loss.detach()) == pytest.approx(total / k_pos, rel=1e-5)


def test_nce_trains_its_own_untied_matrix(batch):
    cfg = config("nce", nce={"negatives": 16, "noise": "uniform"})
    model = build_encoder(cfg.model, VOCAB.size, 0, "nce")
    counts = count_parameters(model, "nce")
    assert counts["output"] == VOCAB.size * 32 + VOCAB.size
    assert counts["total"] == count_parameters(model, "cwt")["total"] + counts["output"]
    log_q = torch.full((VOCAB.size,), -math.log(VOCAB.size))
    mlm_loss(model, batch, cfg, log_q).backward()
    assert model.nce_output.weight.grad is not None
    assert model.nce_output.weight is not model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.transform.dense.weight.grad is None


@pytest.mark.parametrize("objective", ["softmax", "cwt", "ce+cwt", "nce"])
def test_planned_step_cost_is_the_measured_one(objective):
    cfg = config(objective)
    planned = FAMILY.step_costs(cfg)["pretrain"]
    model = build_encoder(cfg.model, VOCAB.size, 0, objective)
    rows = rows_with_boundaries(4, 32, seed=4)
    real = mask_rows(rows, VOCAB, cfg.masking, step_generator(0, 0))
    log_q = torch.full((VOCAB.size,), -math.log(VOCAB.size))
    measured = count_flops(lambda: mlm_loss(model, real, cfg, log_q).backward())
    assert planned.flops == measured
    assert planned.items == 4 * 32


def test_masked_hidden_rows_follow_positions(batch):
    model = build_encoder(config("cwt").model, VOCAB.size, 0, "cwt").eval()
    hidden = model.bert(batch.inputs).last_hidden_state
    row, col = batch.positions[5] // 32, batch.positions[5] % 32
    torch.testing.assert_close(encode(model, batch)[1][5], hidden[row, col])


# --- GLUE fine-tuning ----------------------------------------------------------------------

def test_balanced_class_weights_match_scikit_learn():
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 0, 1, 0, 0])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels.numpy())
    torch.testing.assert_close(balanced_class_weights(labels, 3),
                               torch.tensor(expected, dtype=torch.float32))


def test_pairs_are_truncated_longest_first():
    a, b = _truncate_pair([1, 2, 3, 4, 5, 6], [7, 8], 5)
    assert (a, b) == ([1, 2, 3], [7, 8])
    a, b = _truncate_pair([1, 2, 3], [4, 5, 6, 7], 4)
    assert (a, b) == ([1, 2], [4, 5])


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    docs = narrative_passages(200, seed=0) + SENTIMENT_WORDS
    return load_tokenizer(TokenizerConfig(train_bpe=400), lambda: docs, "passages",
                          tmp_path_factory.mktemp("tok"), layout="mlm")


SENTIMENT_WORDS = ["a good and lovely film", "a bad and awful film"]


def test_examples_are_framed_as_bert_pairs(tokenizer):
    examples = [Example(0, "alice went home", None, 1), Example(1, "bob met", "carol", 0)]
    (single, single_types), (pair, pair_types) = frame_examples(examples, tokenizer, 16)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert single[0] == cls and single[-1] == sep and sep not in single[1:-1]
    assert set(single_types) == {0}
    assert pair[0] == cls and pair.count(sep) == 2 and pair[-1] == sep
    first_sep = pair.index(sep)
    assert pair_types == [0] * (first_sep + 1) + [1] * (len(pair) - first_sep - 1)
    (cut, _), = frame_examples([Example(0, "alice " * 40, None, 0)], tokenizer, 10)
    assert len(cut) == 10


def write_sst2(root: Path, n_train: int, n_dev: int, seed: int) -> Path:
    """A separable sentiment task in SST-2's official layout: the label is the sentiment word."""
    import random

    rng = random.Random(seed)
    filler = ["the", "a", "of", "film", "story", "cast", "scene", "plot", "movie", "actor"]
    folder = root / "SST-2"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("dev", n_dev)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randrange(2)
            words = rng.sample(filler, 6)
            words.insert(rng.randrange(7), "lovely" if label else "awful")
            lines.append(f"{' '.join(words)}\t{label}")
        (folder / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def sst2_scored(tmp_path_factory, tokenizer) -> tuple[GlueEvalConfig, BertPairClassifier,
                                                      EvalSetting, EvalResult]:
    """A tiny encoder fine-tuned and scored on a separable SST-2 by the GLUE evaluator."""
    root = tmp_path_factory.mktemp("sst2")
    write_sst2(root / "glue", 480, 200, seed=0)
    torch.manual_seed(0)
    model = build_encoder(config("cwt").model, len(tokenizer), tokenizer.pad_token_id, "cwt")
    cfg = GlueEvalConfig(path=str(root / "glue"), tasks=["sst2"], finetune=FinetuneConfig(
        epochs=4, batch_size=16, max_seq_len=32,
        optim={"lr": 3e-3, "schedule": "constant", "warmup": 0.1}))
    log = logging.getLogger("test")
    classifier = BertPairClassifier(model.bert, tokenizer, torch.device("cpu"), log,
                                    progress=False)
    setting = EvalSetting(workdir=root / "run" / "glue", log=log, seed=0, progress=False)
    return cfg, classifier, setting, EVALUATOR.evaluate(cfg, classifier, setting)


def test_a_tiny_encoder_learns_a_separable_task(sst2_scored):
    _, classifier, _, result = sst2_scored
    assert isinstance(classifier, PairClassifier)
    m, rows = result.metrics, result.samples["sst2"]
    assert m["sst2.acc"] >= 0.95 and m["score"] == m["sst2.score"] == m["sst2.acc"]
    assert m["sst2.finetune_steps"] == 4 * 30
    assert m["sst2.finetune_flops"] > 0 and m["finetune_flops"] == m["sst2.finetune_flops"]
    assert len(rows) == 200
    assert sum(r["prediction"] == r["label"] for r in rows) / 200 == m["sst2.acc"]
    # The dev labels are balanced: no constant prediction comes near the accuracy reached.
    assert F.one_hot(torch.tensor([r["label"] for r in rows])).float().mean(0).max() < 0.6


def test_every_epoch_is_scored_and_a_finished_task_is_not_redone(sst2_scored, monkeypatch):
    cfg, classifier, setting, result = sst2_scored
    folder = setting.workdir / "sst2"
    assert sorted(p.name for p in folder.iterdir()) == [
        *(f"dev_epoch{n}.jsonl" for n in range(1, 5)), "result.json"]  # checkpoints dropped
    outcome = json.loads((folder / "result.json").read_text())["outcome"]
    scores = outcome["epoch_scores"]
    for n, score in enumerate(scores, 1):
        epoch_rows = [json.loads(line) for line in
                      (folder / f"dev_epoch{n}.jsonl").read_text().splitlines()]
        assert sum(r["prediction"] == r["label"] for r in epoch_rows) / 200 == score
    assert len(scores) == 4 and result.metrics["sst2.epoch"] == 1 + scores.index(max(scores))

    def finetune(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished task was fine-tuned again")

    monkeypatch.setattr(classifier, "finetune", finetune)
    assert EVALUATOR.evaluate(cfg, classifier, setting) == result


SUITE = """\
suite: e2e-encoder
family: encoder
seeds: [0]
budget: {{flops: 2.0e+9}}
model: {{preset: bert-tiny, hidden_size: 32, num_heads: 2, intermediate_size: 64, context: 64}}
data:
  train: {root}/train.jsonl
  seq_len: 32
  tokenizer: {{train_bpe: 400}}
train:
  batch_size: 8
  optim: {{lr: 1.0e-3, warmup: 0.1}}
  validate_every: 5
  val_batches: 2
objective: softmax
evals:
  - glue:
      path: {root}/glue
      tasks: [sst2]
      proxy: true
      finetune:
        epochs: 2
        batch_size: 16
        max_seq_len: 32
        optim: {{lr: 3.0e-3, schedule: constant, warmup: 0.1}}
variants:
  softmax: {{}}
  nce: {{objective: nce, nce: {{negatives: 32}}}}
report:
  baseline: softmax
  metrics: [glue.score, val.mlm_nll]
  table: {{columns: [glue.sst2.acc], scale: 100, ratios: [model.total_params]}}
"""


@pytest.mark.slow
def test_encoder_suite_runs_scores_glue_and_reproduces_from_the_cli(tmp_path, capsys,
                                                                   monkeypatch):
    from support.textgen import write_jsonl

    from bench.cli import main

    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    write_jsonl(tmp_path / "train.jsonl", narrative_passages(300, seed=1))
    write_sst2(tmp_path / "glue", 160, 64, seed=1)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(root=tmp_path))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    runs = {p.parent.name: p.parent for p in (results / "e2e-encoder").glob("*/metrics.json")}
    assert len(runs) == 2
    for run_dir in runs.values():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["glue.score"] == metrics["glue.sst2.acc"] == metrics["glue.sst2.score"]
        assert metrics["glue.score"] == metrics["glue.score_best"] >= metrics["glue.score_last"]
        assert metrics["glue.sst2.finetune_flops"] > 0 and metrics["train.tokens_per_s"] > 0
        assert metrics["train.flops"] <= 2.0e9  # fine-tuning is not charged to the budget
        assert (run_dir / "model" / "config.json").is_file()
        # The stored per-example predictions reproduce the score through `bench eval glue`.
        out = tmp_path / f"{run_dir.name}.json"
        assert main(["eval", "glue", "--data", str(tmp_path / "glue"), "--task", "sst2",
                     "--predictions", str(run_dir / "samples_glue_sst2.jsonl"),
                     "--json", str(out)]) == 0
        assert json.loads(out.read_text())["metrics"]["acc"] == metrics["glue.sst2.acc"]
    nce = [json.loads((d / "metrics.json").read_text()) for d in runs.values()
           if json.loads((d / "config.json").read_text())["config"]["objective"] == "nce"]
    vocab = nce[0]["model.embedding_params"] / 32  # the BPE may stop short of 400 on this text
    assert nce[0]["model.output_params"] == vocab * 32 + vocab
    assert main(["report", str(suite), "--results", str(results), "--out",
                 str(tmp_path / "reports")]) == 0
    html = (tmp_path / "reports" / "e2e-encoder.html").read_text()
    assert "glue.sst2.acc" in html and "×" in html


def test_mlm_rows_are_framed_and_the_tokenizer_has_bert_specials(tmp_path):
    from support.textgen import write_jsonl

    from bench.text.config import DataConfig
    from bench.text.shards import prepare_lm_data

    write_jsonl(tmp_path / "train.jsonl", narrative_passages(200, seed=3))
    cfg = DataConfig(train=str(tmp_path / "train.jsonl"), seq_len=24,
                     tokenizer=TokenizerConfig(train_bpe=300))
    data = prepare_lm_data(cfg, tmp_path / "cache", layout="mlm")
    tok = data.tokenizer
    assert len(tok) <= 300 and len({tok.cls_token_id, tok.sep_token_id, tok.mask_token_id,
                                     tok.pad_token_id}) == 4
    rows = data.train.rows(np.arange(len(data.train)))
    assert rows.shape[1] == 24
    assert (rows[:, 0] == tok.cls_token_id).all() and (rows[:, -1] == tok.sep_token_id).all()
    inner = rows[:, 1:-1]
    assert (inner == tok.sep_token_id).any()  # documents are separated by [SEP]
    assert not torch.isin(inner, torch.tensor([tok.cls_token_id, tok.mask_token_id,
                                               tok.pad_token_id])).any()
    # The causal layout of the same corpus is cached apart and has none of these tokens.
    causal = prepare_lm_data(cfg, tmp_path / "cache", layout="causal")
    assert causal.tokenizer.mask_token is None and causal.train.seq_len == 24
    # A local tokenizer without them gets them added after its own vocabulary; it keeps its
    # own pad token (here eos).
    causal.tokenizer.save_pretrained(tmp_path / "plain")
    local = load_tokenizer(TokenizerConfig(path=str(tmp_path / "plain")), list, "", tmp_path,
                           layout="mlm")
    assert len(local) == len(causal.tokenizer) + 3
    assert local.pad_token == causal.tokenizer.pad_token
    assert local.mask_token == "[MASK]" and local.cls_token_id >= len(causal.tokenizer)


def test_validation_scores_come_from_the_scoring_head(batch):
    from bench.encoder.objectives import validation_scores

    for objective in ("softmax", "cwt"):
        cfg = config(objective)
        torch.manual_seed(0)
        model = build_encoder(cfg.model, VOCAB.size, 0, objective).eval()
        scores = validation_scores(model, batch, cfg, None)
        assert scores["loss"] == pytest.approx(float(mlm_loss(model, batch, cfg).detach()))
        with torch.no_grad():
            predicted = encode(model, batch)[1]
            logits = (model.cls(predicted) if objective == "softmax"
                      else predicted @ model.bert.embeddings.word_embeddings.weight.T)
        assert scores["mlm_nll"] == pytest.approx(float(F.cross_entropy(logits, batch.targets)))
        hits = (logits.argmax(-1) == batch.targets).float().mean()
        assert scores["mlm_acc"] == pytest.approx(float(hits))
    assert scores["mlm_nll"] != pytest.approx(scores["loss"])  # CWT's loss is not its NLL
