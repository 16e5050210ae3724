"""Planned runs executed: one run in its folder (`runner`), as cluster jobs (`cluster`), an
Optuna sweep's trials (`sweep`), a text suite's shards built ahead (`tokenize`).

May import: everything below the command line (ground floor, util, config, training, store,
evaluators, the text pipeline); families only through the registry. Not the report or the
command line."""
