"""The run ids the suites in suites/ resolve to, and the command that records them in
suite_run_ids.json after a deliberate change of a suite or a default (`make run-ids`).

The suites read their data paths from environment variables: `SUITE_ENV` fixes them (the
`suite_env` fixture sets the same values), so the ids do not depend on the machine.
"""

import json
import os
from pathlib import Path

SUITES = Path(__file__).resolve().parents[2] / "suites"
RECORDED = Path(__file__).resolve().parents[1] / "suite_run_ids.json"
SUITE_ENV = {"BENCH_DATA": "/nonexistent"} | {
    var: f"/data/{var.lower()}" for var in (
        "GLUE_DIR", "LAMBADA_OPENAI", "FDDB_ROOT", "PASCAL_ANNOTATIONS", "PASCAL_IMAGES",
        "WIDER_ROOT", "OWT2_TRAIN", "BERT_TOKENIZER", "CCNEWS_TRAIN", "PYTHIA_TOKENIZER",
        "VGG16_WEIGHTS", "WIKI_LANGS", "MBERT_TOKENIZER", "XNLI_DATA", "PYTHIA70M_MODEL",
        "BERT_BASE_MODEL")}


def suite_run_ids() -> dict[str, dict[str, list[str]]]:
    """Suite file (under suites/) -> variant -> its run id for each of the suite's seeds, read
    with the environment as it is (set `SUITE_ENV` first)."""
    from bench.config.plan import run_id
    from bench.config.suite import load_suite

    ids = {}
    for path in sorted(SUITES.glob("*/*.yaml")):
        suite = load_suite(path)
        ids[path.relative_to(SUITES).as_posix()] = {
            name: [run_id(v.resolved, seed) for seed in suite.head.seeds]
            for name, v in suite.variants.items()}
    return ids


if __name__ == "__main__":
    os.environ.update(SUITE_ENV)
    RECORDED.write_text(json.dumps(suite_run_ids(), indent=1) + "\n")
    print(f"wrote {RECORDED}")
