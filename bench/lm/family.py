"""The causal-LM family: pretrain (softmax or CWT), maybe fine-tune a head, hand the model to its
evaluators as a `ContinuationScorer` (LAMBADA through lm-eval)."""

import shutil
from pathlib import Path
from typing import Any

from bench.contract import Family, RunContext, RunSpec, Stage, StepCost
from bench.evals.adapters import ContinuationScorer
from bench.lm.config import LMConfig


class LMFamily:
    name = "lm"
    item_unit = "tokens"
    text_layout: str | None = "causal"
    config_model = LMConfig
    adapters = (ContinuationScorer,)
    default_metrics = ["lambada.acc", "lambada.ppl", "val.nll"]
    report_curve = "curve.val_nll"
    # held-out losses overall and per language (`val.<lang>.*`) down; parameter counts and
    # CWT's negatives are settings, not scores (see Family.higher_is_better)
    higher_is_better = {"val.nll": False, "val.*.nll": False, "val.loss": False,
                        "val.*.loss": False, "model.*_params": None, "cwt.*": None}

    def stages(self, config: LMConfig) -> list[str]:
        return config.stages()

    def step_costs(self, config: LMConfig, processes: int = 1) -> dict[str, StepCost]:
        """Exact step costs from the model's shapes, on fake tensors (nothing is trained).
        `processes` only checks that the batch splits into their shares of whole micro-batches
        (an unset micro-batch is refused on several): the costs do not depend on it."""
        import torch

        from bench.lm.model import build_model, untie_head
        from bench.lm.objectives import causal_lm_loss
        from bench.text.data import vocab_size
        from bench.training.flops import count_flops_abstract

        vocab = vocab_size(config.data.tokenizer)
        from bench.training.distributed import World, local_part

        micro = config.train.micro_batch(processes)
        local_part(config.train.batch_size, current=World(0, processes), micro=micro)
        seq = config.data.seq_len
        costs: dict[str, StepCost] = {}

        def step(objective: str, finetune: bool) -> None:
            model = build_model(config.model, vocab, tied=config.objective == "cwt")
            if finetune:
                model = untie_head(model)
                _freeze_for_probe(model, config)
            ids = torch.zeros((micro, seq), dtype=torch.long)
            causal_lm_loss(model, ids, objective, config.cwt).backward()

        per_micro = count_flops_abstract(lambda: step(config.objective, False))
        n_micro = config.train.batch_size // micro
        costs["pretrain"] = StepCost(per_micro * n_micro, config.train.batch_size * seq)
        if config.head == "finetune":
            ft_batch = _finetune_batch(config)
            per_row = count_flops_abstract(lambda: step("softmax", True)) / micro
            costs["head_finetune"] = StepCost(per_row * ft_batch, ft_batch * seq)
        return costs

    def inputs(self, config: LMConfig) -> dict[str, str]:
        from bench.text.data import text_inputs

        return text_inputs(config.data)

    def derived_inputs(self, config: LMConfig) -> dict[str, dict[str, str]]:
        from bench.text.shards import shards_input

        return shards_input(config.data, "causal")

    def data_root(self, config: LMConfig) -> str | None:
        """LAMBADA files are named in full: there is no data folder to find them beside."""
        return None

    def execute(self, run: RunSpec, ctx: RunContext) -> None:
        import torch

        from bench.evals.lambada import HFScorer
        from bench.lm.model import build_model, untie_head
        from bench.lm.objectives import causal_lm_loss, next_token_nll
        from bench.text.languages import record_sampling
        from bench.text.shards import (
            CACHE_SUBDIR,
            language_scores,
            language_val_batches,
            prepare_lm_data,
        )
        from bench.training.distributed import local_part, world
        from bench.training.loading import to_device
        from bench.util.atomic import build_dir

        cfg: LMConfig = run.config
        device = ctx.device
        data = prepare_lm_data(cfg.data, ctx.cache_dir / CACHE_SUBDIR, build=world().main)
        tok = data.tokenizer
        torch.manual_seed(run.seed)
        model = build_model(cfg.model, len(tok), tied=cfg.objective == "cwt",
                            eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        # PreTrainedModel.to is wraps(Module.to), whose _Wrapped stub takes a model first
        model.to(device)  # type: ignore[arg-type]
        bf16 = cfg.train.precision == "bf16" or (
            cfg.train.precision == "auto" and device.type == "cuda")
        micro = cfg.train.micro_batch(world().size)
        if cfg.objective == "cwt":  # K: the targets of one process's micro-batch
            ctx.record({"cwt.negatives": float(micro * (cfg.data.seq_len - 1))})
        record_sampling(ctx, data.sampling(cfg.train.batch_size))
        if cfg.head == "finetune":  # a language its batch leaves without a row fails up front
            data.sampling(_finetune_batch(cfg))
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
                validate_every=cfg.train.validate_every,
                checkpoint_every=cfg.train.checkpoint_every,
                bf16=bf16, compile=cfg.train.compile, seed=run.seed,
            )

        pre = ctx.train(stage("pretrain", cfg.objective, cfg.train.batch_size, 0,
                              cfg.train.optim, list(model.parameters()), "train.batch_size"))
        if cfg.head == "finetune":
            assert cfg.head_finetune is not None  # LMConfig requires it of head 'finetune'
            ctx.record(_parameter_metrics(model, "model.pretrain"))
            model = untie_head(model).to(device)  # type: ignore[arg-type]  # as above
            _freeze_for_probe(model, cfg)
            trainable = [p for p in model.parameters() if p.requires_grad]
            ft_batch = _finetune_batch(cfg)
            seen = pre.steps * cfg.train.batch_size  # continue on rows pretraining has not used
            ctx.train(stage("head_finetune", "softmax", ft_batch, -(-seen // ft_batch),
                            cfg.head_finetune.optim, trainable, "head_finetune.batch_size"))
            model.requires_grad_(True)
        if not ctx.main:  # rank 0 alone saves and scores the model
            return
        ctx.record(_parameter_metrics(model, "model"))  # the model saved and scored
        final = validate("softmax" if cfg.head == "finetune" else cfg.objective,
                         per_language=True)
        ctx.record({f"val.{k}": v for k, v in final.items()})

        def save(tmp: Path) -> None:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)

        model_dir = ctx.dir / "model"
        shutil.rmtree(model_dir, ignore_errors=True)  # saved by an earlier, interrupted attempt
        build_dir(model_dir, save)
        ctx.log.info("saved model to %s", model_dir)
        ctx.evaluate(HFScorer(model, tok, str(device), saved=model_dir))


def _parameter_metrics(model: Any, prefix: str) -> dict[str, float]:
    """`<prefix>.<role>_params` for each role of `count_parameters` (a tied head counts 0)."""
    from bench.lm.model import count_parameters

    return {f"{prefix}.{k}_params": float(v) for k, v in count_parameters(model).items()}


def _finetune_batch(config: LMConfig) -> int:
    assert config.head_finetune is not None  # LMConfig requires it of head 'finetune'
    return config.head_finetune.batch_size or config.train.batch_size


def _freeze_for_probe(model: Any, config: LMConfig) -> None:
    """'probe' trains the new head only; 'full' trains every parameter."""
    assert config.head_finetune is not None  # LMConfig requires it of head 'finetune'
    if config.head_finetune.mode == "probe":
        model.requires_grad_(False)
        model.lm_head.weight.requires_grad_(True)


FAMILY: Family = LMFamily()

