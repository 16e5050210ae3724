"""Planned runs executed: one run in its folder (`runner`), a suite's runs started inline or as
jobs (`launch`), cluster jobs (`cluster`), an Optuna sweep's study and workers (`sweep`) started
as `bench sweep` starts them (`sweep_launch`), a text suite's shards built ahead (`tokenize`).

May import: everything below the command line (ground floor, util, config, training, store,
evaluators, the text pipeline); families only through the registry. Not the report or the
command line."""
