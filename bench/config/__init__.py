"""From a suite file to the runs it asks for: YAML with file and line (`yaml_source`), the
suite schema and its checks (`suite`), the `sweep:` schema (`sweep_config`), variants x seeds
as run specs with their ids (`plan`).

May import: the ground floor, `bench.util`, the family registry and the evaluator registry (a
suite is validated by its family's and evaluators' schemas). Not training, the store,
execution or the report."""
