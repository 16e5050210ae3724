"""The one training loop and what it stands on: budgets, their stop rule and schedules
(`budget`), the loop (`train`), a stage's checkpoint files and a wsd ladder's branch files
(`checkpoints`), processes and devices (`distributed`), batches read ahead (`loading`), which
rows a step reads (`sampling`), FLOP counting (`flops`), accelerator peaks and MFU
(`accelerators`).

May import: the ground floor and `bench.util`. Not the config, the store, execution, the
evaluators or the report: a family drives it with its own model and data."""
