"""One causal-LM run: pretrain (softmax or CWT) through the training loop, maybe fine-tune an
untied head, save the model and hand it to the evaluators as a `HFScorer` (the family's
`execute`)."""

import shutil
from pathlib import Path
from typing import Any

import torch

from bench.contract import RunContext, RunSpec, Stage, loop_options
from bench.evals.lambada import HFScorer
from bench.evals.saved_model import load_saved_model
from bench.lm.config import LMConfig
from bench.lm.model import build_model, count_parameters, freeze_for_probe, untie_head
from bench.lm.objectives import causal_lm_loss, next_token_nll
from bench.text.languages import record_sampling
from bench.text.shards import CACHE_SUBDIR, language_scores, language_val_batches, prepare_lm_data
from bench.training.distributed import local_part, world
from bench.training.loading import to_device
from bench.util.atomic import build_dir


def execute(run: RunSpec, ctx: RunContext) -> None:
    """Build, train and, on the main process, save and score one run."""
    cfg: LMConfig = run.config
    device = ctx.device
    data = prepare_lm_data(cfg.data, ctx.cache_dir / CACHE_SUBDIR, build=world().main)
    tok = data.tokenizer
    torch.manual_seed(run.seed)
    model = build_model(cfg.model, len(tok), tied=cfg.objective == "cwt",
                        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    # PreTrainedModel.to is wraps(Module.to), whose _Wrapped stub takes a model first
    model.to(device)  # type: ignore[arg-type]
    loop = loop_options(cfg.train, device)
    micro = cfg.train.micro_batch(world().size)
    if cfg.objective == "cwt":  # K: the targets of one process's micro-batch
        ctx.record({"cwt.negatives": float(micro * (cfg.data.seq_len - 1))})
    record_sampling(ctx, data.sampling(cfg.train.batch_size))
    if cfg.head == "finetune":  # a language its batch leaves without a row fails up front
        data.sampling(cfg.head_finetune_batch())
    # a multilingual corpus's held-out batches come per language (`val.<lang>.*` at the end)
    held_out = {name: [b.to(device) for b in part] for name, part in
                language_val_batches(data.val, micro, cfg.train.val_batches).items()}

    @torch.no_grad()
    def validate(objective: str, per_language: bool = False) -> dict[str, float]:
        def score(batch: torch.Tensor) -> dict[str, float]:
            nll = float(next_token_nll(model, batch))
            if objective == "softmax":  # the objective is the NLL itself: no second pass
                return {"loss": nll, "nll": nll}
            return {"loss": float(causal_lm_loss(model, batch, objective, cfg.cwt)),
                    "nll": nll}

        return language_scores(held_out, score, per_language)

    def micro_batches(step: int, batch_size: int, field: str) -> list[torch.Tensor]:
        """This process's share of the step's global batch: only its rows are read."""
        rows = data.train.step_indices(step, batch_size, run.seed)
        mine = local_part(batch_size, field, micro=cfg.train.micro_batch_size)
        share = to_device(data.train.rows(rows[mine]), device)
        return list(share.split(cfg.train.micro_batch_size or len(share)))

    def stage(name: str, objective: str, batch_size: int, offset: int, optim: Any,
              params: list[torch.nn.Parameter], field: str) -> Stage:
        return Stage(
            name=name, model=model, parameters=params, optim=optim,
            micro_batches=lambda k: micro_batches(offset + k, batch_size, field),
            loss=lambda ids: causal_lm_loss(model, ids, objective, cfg.cwt),
            items=lambda ids: ids.numel(),
            validate=lambda _steps: validate(objective),
            validate_every=cfg.train.validate_every, seed=run.seed, **loop,
        )

    pre = ctx.train(stage("pretrain", cfg.objective, cfg.train.batch_size, 0,
                          cfg.train.optim, list(model.parameters()), "train.batch_size"))
    if cfg.head == "finetune":
        assert cfg.head_finetune is not None  # LMConfig requires it of head 'finetune'
        ctx.record(_parameter_metrics(model, "model.pretrain"))
        model = untie_head(model).to(device)  # type: ignore[arg-type]  # as above
        freeze_for_probe(model, cfg)
        trainable = [p for p in model.parameters() if p.requires_grad]
        ft_batch = cfg.head_finetune_batch()
        seen = pre.steps * cfg.train.batch_size  # continue on rows pretraining has not used
        ctx.train(stage("head_finetune", "softmax", ft_batch, -(-seen // ft_batch),
                        cfg.head_finetune.optim, trainable, "head_finetune.batch_size"))
        model.requires_grad_(True)
    if not ctx.main:  # rank 0 alone saves and scores the model
        return
    ctx.record(_parameter_metrics(model, "model"))  # the model saved and scored
    final = validate("softmax" if cfg.head == "finetune" else cfg.objective, per_language=True)
    ctx.record({f"val.{k}": v for k, v in final.items()})

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    model_dir = ctx.dir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)  # saved by an earlier, interrupted attempt
    build_dir(model_dir, save)
    ctx.log.info("saved model to %s", model_dir)
    ctx.evaluate(HFScorer(model, tok, str(device), saved=model_dir))


def score(run: RunSpec, ctx: RunContext) -> None:
    """Score a saved causal LM (a released checkpoint) with the suite's evaluators, loaded as
    `bench eval lambada --model` loads it, so the numbers are the same; trains nothing."""
    assert run.variant.checkpoint is not None  # the runner scores reference variants only
    model_dir = Path(run.variant.checkpoint)
    model, tok = load_saved_model(model_dir, named=f"variants.{run.variant.name}.checkpoint")
    ctx.record(_parameter_metrics(model, "model"))
    ctx.log.info("scoring the saved model %s", model_dir)
    ctx.evaluate(HFScorer(model, tok, str(ctx.device), saved=model_dir))


def _parameter_metrics(model: Any, prefix: str) -> dict[str, float]:
    """`<prefix>.<role>_params` for each role of `count_parameters` (a tied head counts 0)."""
    return {f"{prefix}.{k}_params": float(v) for k, v in count_parameters(model).items()}
