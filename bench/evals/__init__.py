"""Downstream evaluations: scored through the same tools the papers' readers use, so the numbers
here can be reproduced outside this harness. One module per protocol with its evaluator, the
contract (`evaluator`), the adapters a model is scored through (`adapters`), the lazy registry
(`registry`) and each evaluator's `bench eval` command (`*_cli`).

May import: the ground floor, `bench.util` and `bench.training` (`bench eval lambada --model`
loads weights as training does). Not the families, the config, the store, execution, the
report or the command line."""
