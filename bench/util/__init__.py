"""Helpers every stage uses and that know nothing of suites, runs or models: whole-or-nothing
writes (`atomic`), content fingerprints (`fingerprint`), progress display (`progress`),
timing statistics (`timing`), where bench may write and where its cache lives (`paths`),
which code is running (`source`).

May import: the ground floor (`bench.errors`, `bench.schema`) and nothing else of bench."""
