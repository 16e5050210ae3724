"""One masked-LM run: pretrain a BERT encoder through the training loop under the run's budget,
save it and hand it to the evaluators as a `BertPairClassifier` (the family's `execute`)."""

from pathlib import Path
from typing import Any

import torch

from bench.contract import RunContext, RunSpec, Stage, loop_options
from bench.encoder.config import EncoderConfig
from bench.encoder.finetune import BertPairClassifier
from bench.encoder.masking import Vocabulary, mask_rows, predicted_per_row, step_generator
from bench.encoder.model import build_encoder, count_parameters, trained_parameters
from bench.encoder.objectives import mlm_loss, validation_scores
from bench.evals.saved_model import load_saved_model
from bench.text.languages import record_sampling
from bench.text.shards import CACHE_SUBDIR, language_scores, language_val_batches, prepare_lm_data
from bench.training.distributed import local_part, world
from bench.util.atomic import build_dir


def execute(run: RunSpec, ctx: RunContext) -> None:
    """Build, train and, on the main process, save and score one run."""
    cfg: EncoderConfig = run.config
    device = ctx.device
    data = prepare_lm_data(cfg.data, ctx.cache_dir / CACHE_SUBDIR, layout="mlm",
                           build=world().main)
    tok = data.tokenizer
    vocab = Vocabulary(len(tok), tok.mask_token_id, tuple(sorted(set(tok.all_special_ids))))
    torch.manual_seed(run.seed)
    # PreTrainedModel.to is wraps(Module.to), whose _Wrapped stub takes a model first
    model = build_encoder(cfg.model, vocab.size, tok.pad_token_id, cfg.objective).to(device)  # type: ignore[arg-type]
    log_noise = _log_noise(data.unigram(), vocab, cfg.nce.noise).to(device) \
        if cfg.objective == "nce" else None
    loop = loop_options(cfg.train, device)
    micro = cfg.train.micro_batch(world().size)
    record_sampling(ctx, data.sampling(cfg.train.batch_size))
    # Held-out rows masked the same way for every run and seed, so curves compare; a
    # multilingual corpus's batches come per language (`val.<lang>.*` at the end).
    by_language = language_val_batches(data.val, micro, cfg.train.val_batches)
    held_out = {name: [mask_rows(rows, vocab, cfg.masking,
                                 step_generator(0, i, f"val{name}")).to(device)
                       for i, rows in enumerate(batches)]
                for name, batches in by_language.items()}

    def validate(_steps: int = 0, per_language: bool = False) -> dict[str, float]:
        # NCE draws noise: keep validation off the training RNG stream.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            return language_scores(
                held_out, lambda b: validation_scores(model, b, cfg, log_noise), per_language)

    batch = cfg.train.batch_size
    share = local_part(batch, micro=micro)
    size = share.stop - share.start
    if cfg.objective in ("cwt", "ce+cwt"):  # K: one micro-batch's predicted positions
        ctx.record({"cwt.negatives": float(
            micro * predicted_per_row(cfg.data.seq_len, cfg.masking))})

    def micro_batches(step: int) -> list[Any]:
        """The global batch is masked whole, as on one process, then this process keeps its
        share: rows and masks equal a single-process run's, split."""
        rows = data.train.rows(data.train.step_indices(step, batch, run.seed))
        masked = mask_rows(rows, vocab, cfg.masking, step_generator(run.seed, step))
        mine = masked.split(size)[share.start // size]
        return [b.to(device) for b in mine.split(micro)]

    ctx.record({f"model.{k}_params": float(v)
                for k, v in count_parameters(model, cfg.objective).items()})
    ctx.train(Stage(
        name="pretrain", model=model, parameters=trained_parameters(model, cfg.objective),
        optim=cfg.train.optim, micro_batches=micro_batches,
        loss=lambda batch: mlm_loss(model, batch, cfg, log_noise),
        items=lambda batch: batch.inputs.numel(), validate=validate,
        validate_every=cfg.train.validate_every, seed=run.seed, **loop))
    if not ctx.main:  # rank 0 alone saves, fine-tunes and scores the encoder
        return
    model.eval()
    with torch.no_grad():
        ctx.record({f"val.{k}": v for k, v in validate(per_language=True).items()})

    def save(tmp: Any) -> None:
        model.bert.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    build_dir(ctx.dir / "model", save)
    ctx.log.info("saved the encoder (BertModel) to %s", ctx.dir / "model")
    ctx.evaluate(BertPairClassifier(model.bert, tok, device, ctx.log, loop["bf16"],
                                    ctx.progress))


def score(run: RunSpec, ctx: RunContext) -> None:
    """Fine-tune and score a saved BERT encoder (a released checkpoint) as a trained run's
    encoder is, in the suite's precision; trains nothing before."""
    from transformers import BertModel

    assert run.variant.checkpoint is not None  # the runner scores reference variants only
    cfg: EncoderConfig = run.config
    folder = Path(run.variant.checkpoint)
    encoder, tok = load_saved_model(folder, BertModel, f"variants.{run.variant.name}.checkpoint")
    total = sum(p.numel() for p in encoder.parameters())
    embedding = encoder.get_input_embeddings().weight.numel()
    ctx.record({"model.total_params": float(total), "model.embedding_params": float(embedding),
                "model.non_embedding_params": float(total - embedding)})
    ctx.log.info("scoring the saved encoder %s", folder)
    ctx.evaluate(BertPairClassifier(encoder, tok, ctx.device, ctx.log,
                                    cfg.train.autocast_bf16(ctx.device.type), ctx.progress))


def _log_noise(unigram: Any, vocab: Vocabulary, kind: str) -> torch.Tensor:
    """log q over the vocabulary: the training tokens' frequencies (`unigram`, counted when the
    corpus was tokenized) or uniform; special tokens get 0."""
    if kind == "unigram":
        counts = torch.from_numpy(unigram).double()
    else:
        counts = torch.ones(vocab.size, dtype=torch.float64)
    counts[list(vocab.special_ids)] = 0
    return (counts / counts.sum()).log().float()
