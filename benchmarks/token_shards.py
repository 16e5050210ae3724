"""Token shards at growing corpus sizes: peak memory and throughput of the build, and how fast
batches are cut from the memory maps.

Corpora of 40, 160 and 640 MB of JSON lines are made from the demo corpus
($BENCH_DATA/demo-text/train.jsonl), each copy in its own document order. Every build runs in a
fresh process (the workers are its children); its peak RSS is that of the whole process tree,
sampled every 50 ms with psutil, and its CPU time comes from getrusage(RUSAGE_CHILDREN). The
in-memory pipeline this replaced (HEAD~'s `prepare_lm_data`, read from git) is measured the same
way at the smallest size. All builds use one local 8,192-token BPE trained once on the demo corpus.

    python benchmarks/token_shards.py [--sizes 40 160 640] [--workers 1 2]
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BASELINE_COMMIT = "6b91a7c"  # the last commit with the in-memory pipeline

NEW = """
import json, sys
from bench.text.config import DataConfig
from bench.text.shards import prepare_lm_data
cfg = DataConfig(train=sys.argv[1], seq_len=128, tokenizer={"path": sys.argv[2]})
data = prepare_lm_data(cfg, sys.argv[3], workers=int(sys.argv[4]))
print(json.dumps({"tokens": data.train_tokens + data.val_tokens}))
"""
OLD = """
import json, sys
sys.path.insert(0, sys.argv[5])
from old_lm_data import prepare_lm_data
from bench.text.config import DataConfig
cfg = DataConfig(train=sys.argv[1], seq_len=128, tokenizer={"path": sys.argv[2]})
data = prepare_lm_data(cfg, sys.argv[3])
print(json.dumps({"tokens": data.train_tokens + data.val_tokens}))
"""


def make_corpus(source: Path, megabytes: int, out: Path) -> Path:
    """`megabytes` of JSON lines: copies of `source`, each shuffled with its own seed."""
    lines = source.read_text().splitlines(keepends=True)
    size, copy = 0, 0
    with out.open("w") as handle:
        while size < megabytes * 1e6:
            order = lines[:]
            random.Random(copy).shuffle(order)
            for line in order:
                handle.write(line)
                size += len(line.encode())
                if size >= megabytes * 1e6:
                    break
            copy += 1
    return out


def train_tokenizer(source: Path, out: Path) -> Path:
    from bench.text.config import TokenizerConfig
    from bench.text.data import load_tokenizer, open_corpus, read_documents

    corpus = open_corpus(str(source))
    tokenizer = load_tokenizer(TokenizerConfig(train_bpe=8192),
                               lambda: read_documents(corpus), "benchmark", out / "cache")
    tokenizer.save_pretrained(out / "bpe8192")
    return out / "bpe8192"


def measure(argv: list[str]) -> dict[str, float]:
    """Wall time, CPU time and peak RSS of the process tree of one command; its JSON output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=ROOT)
    parent, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode:
        raise SystemExit(f"{argv[:3]} failed with exit status {child.returncode}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = json.loads(child.stdout.read().decode().strip().splitlines()[-1])
    return {"wall": wall, "cpu": cpu, "rss_mb": peak / 1e6, **result}


def read_rate(corpus: Path, tokenizer: Path, cache: Path, batch: int, seq_len: int) -> float:
    """Batches per second: the indices of a step and its rows read from the memory maps."""
    from bench.text.config import DataConfig
    from bench.text.shards import prepare_lm_data
    from bench.training.sampling import batch_indices

    cfg = DataConfig(train=str(corpus), seq_len=seq_len, tokenizer={"path": str(tokenizer)})
    rows = prepare_lm_data(cfg, cache).train
    steps, began = 2000, time.perf_counter()
    for step in range(steps):
        rows.rows(batch_indices(len(rows), step, batch, 0))
    return steps / (time.perf_counter() - began)


def training_rate(batch: int, seq_len: int) -> float:
    """Optimizer steps per second of the demo LM (suites/demo/lm.yaml's model and shape)."""
    import torch

    from bench.config.suite import load_suite
    from bench.lm.config import LMConfig
    from bench.lm.model import build_model
    from bench.lm.objectives import causal_lm_loss

    config: LMConfig = load_suite(ROOT / "suites/demo/lm.yaml").variants["softmax"].config
    model = build_model(config.model, 8192, tied=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 8192, (batch, seq_len))

    def step() -> None:
        causal_lm_loss(model, ids, "softmax", config.cwt).backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    began = time.perf_counter()
    for _ in range(5):
        step()
    return 5 / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 160, 640], help="MB")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    from bench.util.paths import cache_home

    source = cache_home() / "demo-text" / "train.jsonl"
    with tempfile.TemporaryDirectory(prefix="token-shards-") as tmp_name:
        tmp = Path(tmp_name)
        tokenizer = train_tokenizer(source, tmp)
        old = tmp / "old"
        old.mkdir()
        (old / "old_lm_data.py").write_text(subprocess.run(
            ["git", "show", f"{BASELINE_COMMIT}:bench/lm/data.py"], cwd=ROOT, check=True,
            capture_output=True, text=True).stdout)
        rows = []
        for megabytes in args.sizes:
            corpus = make_corpus(source, megabytes, tmp / f"c{megabytes}.jsonl")
            for workers in args.workers:
                cache = tmp / f"cache-{megabytes}-{workers}"
                result = measure([sys.executable, "-c", NEW, str(corpus), str(tokenizer),
                                  str(cache), str(workers)])
                rows.append({"path": "shards", "mb": megabytes, "workers": workers, **result})
                print(json.dumps(rows[-1]), flush=True)
            if megabytes == min(args.sizes):
                result = measure([sys.executable, "-c", OLD, str(corpus), str(tokenizer),
                                  str(tmp / "cache-old"), "0", str(old)])
                rows.append({"path": "in-memory", "mb": megabytes, "workers": 0, **result})
                print(json.dumps(rows[-1]), flush=True)
                batches_per_s = read_rate(corpus, tokenizer, tmp / f"cache-{megabytes}-1",
                                          16, 128)
            corpus.unlink()
    report(rows, batches_per_s, training_rate(16, 128), min(args.sizes))


def report(rows: list[dict], batches_per_s: float, steps_per_s: float, smallest: int) -> None:
    print(f"\n{'path':<10}{'MB':>5}{'workers':>8}{'tokens':>12}{'wall s':>8}{'CPU s':>8}"
          f"{'tok/s':>11}{'tok/CPU-s':>11}{'peak RSS MB':>13}")
    for r in rows:
        print(f"{r['path']:<10}{r['mb']:>5}{r['workers']:>8}{r['tokens']:>12}{r['wall']:>8.1f}"
              f"{r['cpu']:>8.1f}{r['tokens'] / r['wall']:>11.3g}{r['tokens'] / r['cpu']:>11.3g}"
              f"{r['rss_mb']:>13.0f}")
    shards = [r for r in rows if r["path"] == "shards"]
    for workers in sorted({r["workers"] for r in shards}):
        peaks = [r["rss_mb"] for r in shards if r["workers"] == workers]
        print(f"peak RSS largest/smallest corpus, {workers} worker(s): "
              f"{max(peaks) / min(peaks):.2f} (goal <= 1.3)")
    [old] = [r for r in rows if r["path"] == "in-memory"]
    old_per_core = old["tokens"] / old["wall"] / (psutil.cpu_count() or 1)  # rayon threads
    for r in (r for r in shards if r["mb"] == smallest):
        per_core = r["tokens"] / r["wall"] / r["workers"]
        print(f"{r['workers']} worker(s) vs in-memory at {smallest} MB: tokens per CPU-second "
              f"{(r['tokens'] / r['cpu']) / (old['tokens'] / old['cpu']):.2f}x, tokens/s per "
              f"core {per_core / old_per_core:.2f}x (goal >= 5x)")
    print(f"read path: {batches_per_s:.0f} batches/s of 16 x 128 from the memory maps; the demo "
          f"model trains {steps_per_s:.1f} steps/s ({batches_per_s / steps_per_s:.0f}x headroom)")


if __name__ == "__main__":
    main()
