"""The encoder family: pretrain a BERT masked LM under the run's budget, then hand the encoder to
its evaluators as a `PairClassifier` (GLUE fine-tunes and scores it)."""

from typing import Any

from bench.contract import Family, RunContext, RunSpec, Stage, StepCost
from bench.encoder.config import EncoderConfig
from bench.evals.adapters import PairClassifier


class EncoderFamily:
    name = "encoder"
    item_unit = "tokens"
    text_layout: str | None = "mlm"
    config_model = EncoderConfig
    adapters = (PairClassifier,)
    default_metrics = ["glue.score", "val.mlm_nll", "val.mlm_acc", "model.total_params"]
    report_curve = "curve.val_mlm_nll"
    # held-out scores overall and per language (`val.<lang>.*`); the paper counts trained
    # parameters as a cost, the other counts and CWT's negatives are settings (see
    # Family.higher_is_better)
    higher_is_better = {"val.mlm_nll": False, "val.*.mlm_nll": False, "val.mlm_acc": True,
                        "val.*.mlm_acc": True, "val.loss": False, "val.*.loss": False,
                        "model.total_params": False, "model.*_params": None, "cwt.*": None}

    def stages(self, config: EncoderConfig) -> list[str]:
        return config.stages()

    def step_costs(self, config: EncoderConfig, processes: int = 1) -> dict[str, StepCost]:
        """Exact step costs from the model's shapes, on fake tensors (nothing is trained).
        `processes` only checks that the batch splits into their shares of whole micro-batches
        (an unset micro-batch is refused on several): the costs do not depend on it."""
        import torch

        from bench.encoder.masking import MaskedBatch, predicted_per_row
        from bench.encoder.model import build_encoder
        from bench.encoder.objectives import mlm_loss
        from bench.text.data import vocab_size
        from bench.training.flops import count_flops_abstract

        vocab = vocab_size(config.data.tokenizer, layout="mlm")
        from bench.training.distributed import World, local_part

        micro = config.train.micro_batch(processes)
        local_part(config.train.batch_size, current=World(0, processes), micro=micro)
        seq = config.data.seq_len
        per_row = predicted_per_row(seq, config.masking)

        def step() -> None:
            model = build_encoder(config.model, vocab, 0, config.objective)
            positions = (torch.arange(micro)[:, None] * seq + 1 + torch.arange(per_row)).flatten()
            batch = MaskedBatch(torch.zeros((micro, seq), dtype=torch.long), positions,
                                torch.zeros(len(positions), dtype=torch.long))
            log_noise = torch.full((vocab,), -float(torch.log(torch.tensor(float(vocab)))))
            mlm_loss(model, batch, config, log_noise).backward()

        n_micro = config.train.batch_size // micro
        return {"pretrain": StepCost(count_flops_abstract(step) * n_micro,
                                     config.train.batch_size * seq)}

    def inputs(self, config: EncoderConfig) -> dict[str, str]:
        from bench.text.data import text_inputs

        return text_inputs(config.data)

    def derived_inputs(self, config: EncoderConfig) -> dict[str, dict[str, str]]:
        from bench.text.shards import shards_input

        return shards_input(config.data, "mlm")

    def data_root(self, config: EncoderConfig) -> str | None:
        return None

    def execute(self, run: RunSpec, ctx: RunContext) -> None:
        import torch

        from bench.encoder.finetune import BertPairClassifier
        from bench.encoder.masking import (
            Vocabulary,
            mask_rows,
            predicted_per_row,
            step_generator,
        )
        from bench.encoder.model import build_encoder, count_parameters, trained_parameters
        from bench.encoder.objectives import mlm_loss, validation_scores
        from bench.text.languages import record_sampling
        from bench.text.shards import (
            CACHE_SUBDIR,
            language_scores,
            language_val_batches,
            prepare_lm_data,
        )
        from bench.training.distributed import local_part, world
        from bench.util.atomic import build_dir

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
        bf16 = cfg.train.precision == "bf16" or (
            cfg.train.precision == "auto" and device.type == "cuda")
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
                    held_out, lambda b: validation_scores(model, b, cfg, log_noise),
                    per_language)

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
            validate_every=cfg.train.validate_every, checkpoint_every=cfg.train.checkpoint_every,
            bf16=bf16, compile=cfg.train.compile, seed=run.seed))
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
        ctx.evaluate(BertPairClassifier(model.bert, tok, device, ctx.log, bf16, ctx.progress))


def _log_noise(unigram: Any, vocab: Any, kind: str) -> Any:
    """log q over the vocabulary: the training tokens' frequencies (`unigram`, counted when the
    corpus was tokenized) or uniform; special tokens get 0."""
    import torch

    if kind == "unigram":
        counts = torch.from_numpy(unigram).double()
    else:
        counts = torch.ones(vocab.size, dtype=torch.float64)
    counts[list(vocab.special_ids)] = 0
    return (counts / counts.sum()).log().float()


FAMILY: Family = EncoderFamily()
