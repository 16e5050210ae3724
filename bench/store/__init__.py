"""The record of runs: run folders and who holds them (`runs`: `Store`; `claims`), the SQLite
index derived from the folders (`index`) and the reports' reads of it (`queries`), what a run
records of where it ran (`provenance`).

May import: the ground floor and `bench.util`. Not the config, training, execution, the
evaluators or the report."""
