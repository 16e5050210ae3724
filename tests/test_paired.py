"""Paired tests over examples (bench/report/paired.py), checked against scipy on the same pairs,
the evaluators' per-example rules against their own metrics, and the verdicts a report opens
with."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_report import make_spec

from bench.evals.fddb import EVALUATOR as FDDB
from bench.evals.fddb import FDDBEval
from bench.evals.glue import EVALUATOR as GLUE
from bench.evals.glue import split_metrics
from bench.evals.lambada import EVALUATOR as LAMBADA
from bench.evals.wider import EVALUATOR as WIDER
from bench.evals.wider import SETTINGS, WiderEval, WiderGroundTruth
from bench.evals.xnli import EVALUATOR as XNLI
from bench.evals.xnli import rows_metrics
from bench.report import paired
from bench.report.suite_data import load_suite_data
from bench.report.tables import report_tables
from bench.report.verdicts import verdict
from bench.store.runs import Store

SUITE = "paired"
EXAMPLES = 400


def _masks(seed: int, p_a: float, p_b: float, n: int = EXAMPLES) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(n) < p_a, rng.random(n) < p_b


@pytest.mark.parametrize(("p_a", "p_b"), [(0.6, 0.5), (0.5, 0.5), (0.3, 0.35), (0.9, 0.1)])
def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_pairs(p_a: float,
                                                                     p_b: float) -> None:
    a, b = _masks(7, p_a, p_b)
    test = paired.mcnemar([(a, b)])
    better, worse = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert (test.better, test.worse, test.examples, test.seeds) == (better, worse, EXAMPLES, 1)
    n = better + worse
    assert test.p == pytest.approx(stats.binomtest(better, n, 0.5).pvalue, rel=1e-12)
    # statsmodels' mcnemar(exact=True): twice the smaller tail of Binomial(n, 1/2), at most 1
    assert test.p == pytest.approx(min(1.0, 2 * stats.binom.cdf(min(better, worse), n, 0.5)),
                                   rel=1e-12)
    assert test.diff == pytest.approx(a.mean() - b.mean())


def test_mcnemar_adds_the_discordant_pairs_of_every_seed() -> None:
    pairs = [_masks(seed, 0.55, 0.5) for seed in range(3)]
    test = paired.mcnemar(pairs)
    better = sum(int(np.sum(a & ~b)) for a, b in pairs)
    worse = sum(int(np.sum(~a & b)) for a, b in pairs)
    assert (test.better, test.worse, test.seeds) == (better, worse, 3)
    assert test.p == pytest.approx(stats.binomtest(better, better + worse, 0.5).pvalue)
    assert paired.mcnemar_p(0, 0) == 1.0


def _lambada_rows(correct: np.ndarray, ll: np.ndarray) -> list[dict[str, object]]:
    return [{"doc_id": i, "is_greedy": bool(c), "loglikelihood": float(x)}
            for i, (c, x) in enumerate(zip(correct, ll, strict=True))]


def _arrays(rows: list[dict[str, object]], metric: str, tmp_path: Path) -> np.ndarray:
    per = LAMBADA.per_example(metric)
    assert per is not None
    (tmp_path / "samples_lambada.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    found = paired.example_arrays(paired.samples_of(tmp_path, "lambada", per.samples) or [], per)
    assert found is not None
    return found[1]


def test_lambadas_rules_give_lm_evals_accuracy_and_perplexity(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    correct, ll = rng.random(50) < 0.4, -rng.exponential(3.0, 50)
    rows = _lambada_rows(correct, ll)
    acc, ppl = LAMBADA.per_example("acc"), LAMBADA.per_example("ppl")
    assert acc is not None and ppl is not None and LAMBADA.per_example("n") is None
    assert acc.aggregate(_arrays(rows, "acc", tmp_path)) == pytest.approx(correct.mean())
    # lm-eval's perplexity: exp of the negative mean log-likelihood of the targets
    assert ppl.aggregate(_arrays(rows, "ppl", tmp_path)) == pytest.approx(math.exp(-ll.mean()))
    assert ppl.correct is None and acc.correct is not None


def test_the_bootstrap_is_reproducible_and_centred_on_the_difference(tmp_path: Path) -> None:
    per = LAMBADA.per_example("ppl")
    assert per is not None
    rng = np.random.default_rng(2)
    pairs = []
    for _ in range(2):
        base = -rng.exponential(3.0, EXAMPLES)
        pairs.append(((base - 0.3 + rng.normal(0, 0.2, EXAMPLES)).reshape(-1, 1),
                      base.reshape(-1, 1)))
    test = paired.paired_bootstrap(pairs, per, resamples=500)
    assert test == paired.paired_bootstrap(pairs, per, resamples=500)
    exact = np.mean([math.exp(-a.mean()) - math.exp(-b.mean()) for a, b in pairs])
    assert test.diff == pytest.approx(exact)
    assert test.low < test.diff < test.high and test.low > 0  # a clear rise in perplexity
    assert test.p == pytest.approx(2 / 501)  # no resample on the other side: (0 + 1) / (R + 1)
    same = paired.paired_bootstrap([(a, a) for a, _ in pairs], per, resamples=200)
    assert (same.diff, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)


def test_a_bootstrap_interval_of_a_mean_is_close_to_the_paired_t_interval() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(0.1, 1.0, 2000)
    b = a - 0.05 + rng.normal(0, 0.5, 2000)
    per = paired.PerExample("", ("i",), ("x",), lambda x: float(x[:, 0].mean()))
    test = paired.paired_bootstrap([(a.reshape(-1, 1), b.reshape(-1, 1))], per)
    t = stats.ttest_rel(a, b)
    low, high = t.confidence_interval(0.95)
    assert test.low == pytest.approx(low, abs=0.01) and test.high == pytest.approx(high, abs=0.01)
    assert test.p == pytest.approx(t.pvalue, abs=0.02)


def test_glue_rules_score_the_rows_as_the_task_does() -> None:
    rng = np.random.default_rng(4)
    labels, predictions = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    array = np.column_stack([labels, predictions]).astype(float)
    for metric, name in [("mrpc.acc", "acc"), ("mrpc.f1", "f1"), ("cola.mcc", "mcc"),
                         ("cola.score", "mcc"), ("mrpc.score", "acc")]:
        per = GLUE.per_example(metric)
        assert per is not None and per.key == ("split", "idx")
        task = metric.partition(".")[0]
        assert per.aggregate(array) == pytest.approx(split_metrics(task, labels,
                                                                   predictions)[name])
        assert (per.correct is not None) == (name == "acc")
    matched = GLUE.per_example("mnli.acc_mm")
    assert matched is not None and matched.only == ("split", "dev_mismatched")
    assert GLUE.per_example("mnli.acc") is not None and GLUE.per_example("mnli.acc").only \
        is None  # both dev splits pooled, as evaluate_task scores it
    assert GLUE.per_example("mrpc.epoch") is None and GLUE.per_example("score") is None


def _store(root: Path, runs: dict[tuple[str, int], list[dict[str, object]]]) -> Path:
    """Finished runs with the given per-example LAMBADA rows (and their accuracy)."""
    store = Store(root)
    for (variant, seed), rows in runs.items():
        run_id = f"{variant}-{seed}"
        store.begin(SUITE, variant, seed, run_id, {"budget": {"steps": 10}},
                    {"started": "2025-01-01"})
        acc = float(np.mean([r["is_greedy"] for r in rows]))
        store.finish(run_id, {"lambada.acc": acc, "lambada.ppl": 10.0 + seed}, [], {}, {})
        (root / SUITE / run_id / "samples_lambada.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    return root / "index.sqlite"


def test_a_report_tests_each_variant_against_the_baseline_over_examples(tmp_path: Path
                                                                       ) -> None:
    rng = np.random.default_rng(5)
    runs = {}
    masks = {}
    for seed in (0, 1):
        a, b = _masks(seed, 0.6, 0.4)
        masks[seed] = (a, b)
        ll = -rng.exponential(2.0, EXAMPLES)
        runs[("cwt", seed)] = _lambada_rows(a, ll)
        runs[("softmax", seed)] = _lambada_rows(b, ll + 0.1)
    # a third variant scored on other examples: no pair, so no test
    runs[("other", 0)] = [dict(r, doc_id=int(r["doc_id"]) + 10_000)
                          for r in runs[("cwt", 0)]]
    index = _store(tmp_path, runs)
    spec = make_spec(suite=SUITE, variants=["softmax", "cwt", "other"], reference={},
                     table=None, proxies=["lambada"])
    summary = report_tables(spec, load_suite_data(index, SUITE))["main"].numbers
    row = summary.loc[("cwt", "lambada.acc")]
    better = sum(int(np.sum(a & ~b)) for a, b in masks.values())
    worse = sum(int(np.sum(~a & b)) for a, b in masks.values())
    assert (row["example_test"], row["example_seeds"], row["examples"]) == ("McNemar", 2,
                                                                           EXAMPLES)
    assert (row["discordant_better"], row["discordant_worse"]) == (better, worse)
    assert row["example_p"] == pytest.approx(stats.binomtest(better, better + worse).pvalue)
    ppl = summary.loc[("cwt", "lambada.ppl")]
    assert ppl["example_test"] == "paired bootstrap"
    def perplexity(variant: str, seed: int) -> float:
        return math.exp(-np.mean([r["loglikelihood"] for r in runs[(variant, seed)]]))

    assert ppl["example_diff"] == pytest.approx(
        np.mean([perplexity("cwt", s) - perplexity("softmax", s) for s in (0, 1)]))
    assert ppl["example_low"] > 0  # each target 0.1 nats less likely: a higher perplexity
    assert pd.isna(summary.loc[("other", "lambada.acc"), "example_test"])
    assert pd.isna(summary.loc[("softmax", "lambada.acc"), "example_test"])  # the baseline
    lines = {v: verdict(spec, v, "lambada.acc", summary.loc[(v, "lambada.acc")])
             for v in ("cwt", "other")}
    assert lines["cwt"].startswith("cwt vs softmax, lambada.acc (proxy): better (+")
    assert f"McNemar over {EXAMPLES} examples × 2 seeds, {better} vs {worse} discordant" \
        in lines["cwt"]
    assert "; over seeds: paired t-test p=" in lines["cwt"]  # the seed test beside it
    # one seed, other examples: a Welch test without a p
    assert lines["other"].startswith("other vs softmax, lambada.acc (proxy): not tested (")
    assert lines["other"].endswith("; Welch t-test over 1 seed, p undefined)")


def test_no_detectable_difference_and_ties_are_said_so() -> None:
    spec = make_spec()
    base = {"delta_test": "paired", "n": 3, "delta": 0.01, "delta_p": 0.4,
            "example_test": "McNemar", "example_seeds": 3, "examples": 500,
            "example_diff": 0.004, "example_p": 0.3, "discordant_better": 20,
            "discordant_worse": 14}
    line = verdict(spec, "cwt", "lambada.acc", pd.Series(base))
    assert line == ("cwt vs softmax, lambada.acc: no detectable difference at this budget "
                    "(+0.0040; McNemar over 500 examples × 3 seeds, 20 vs 14 discordant, p=0.3; "
                    "over seeds: paired t-test p=0.4)")
    tie = verdict(spec, "cwt", "lambada.acc", pd.Series(base | {"example_diff": 0.0,
                                                                "discordant_better": 14}))
    assert tie.startswith("cwt vs softmax, lambada.acc: tie (the same value; McNemar")
    worse = verdict(spec, "cwt", "lambada.ppl", pd.Series(base | {
        "example_test": math.nan, "delta": 30.0, "delta_p": 0.001}))
    assert worse.startswith("cwt vs softmax, lambada.ppl: worse (+30.00; paired t-test over 3 "
                            "seeds, p=0.001)")


def test_xnli_rules_pair_a_languages_examples(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    rows = [{"split": f"{kind}.{lang}", "idx": i, "label": int(rng.integers(3)),
             "prediction": int(rng.integers(3))}
            for kind in ("dev", "test") for lang in ("en", "de") for i in range(60)]
    (tmp_path / "samples_xnli_zero_shot.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    expected = rows_metrics(rows)
    for metric, name in [("zero_shot.de.acc", "de.acc"), ("zero_shot.en.dev_acc", "en.dev_acc")]:
        per = XNLI.per_example(metric)
        assert per is not None and per.correct is not None
        found = paired.example_arrays(paired.samples_of(tmp_path, "xnli", per.samples) or [], per)
        assert found is not None and len(found[0]) == 60  # one language's split alone
        assert per.aggregate(found[1]) == pytest.approx(expected[name])
    assert XNLI.per_example("zero_shot.avg") is None
    assert XNLI.per_example("zero_shot.epoch") is None
    assert XNLI.per_example("translate_train.de.acc") is not None


def _wider_case(rng: np.random.Generator, images: int = 80
                ) -> tuple[WiderGroundTruth, dict, dict]:
    """Ground truth of `images` images and two detectors' predictions: the baseline's near
    every face, the variant's missing about a third of them; both with false positives."""
    boxes, counted, base, variant = {}, {s: {} for s in SETTINGS}, {}, {}
    for i in range(images):
        key = ("0--Parade", f"img_{i:03d}")
        n = int(rng.integers(0, 6))
        b = np.c_[rng.integers(0, 400, (n, 2)), rng.integers(8, 40, (n, 2))].astype(float)
        boxes[key] = b
        hard = rng.random(n) < 0.8
        for s, m in zip(SETTINGS, (hard & (rng.random(n) < 0.5), hard & (rng.random(n) < 0.8),
                                   hard), strict=True):
            counted[s][key] = m
        noise = np.c_[rng.integers(0, 400, (4, 2)), rng.integers(8, 40, (4, 2))].astype(float)
        near = b + rng.integers(-1, 2, b.shape)
        base[key] = np.r_[np.c_[near, 0.5 + 0.5 * rng.random(n)],
                          np.c_[noise, 0.6 * rng.random(4)]]
        kept = rng.random(n) < 0.65
        variant[key] = np.r_[np.c_[near[kept], 0.5 + 0.5 * rng.random(int(kept.sum()))],
                             np.c_[noise, 0.6 * rng.random(4)]]
    gt = WiderGroundTruth(("0--Parade",), boxes, counted)
    return gt, base, variant


def test_wider_pairs_images_and_its_summed_bootstrap_is_the_copying_one(tmp_path: Path) -> None:
    """WIDER's rule resamples images: a resample's AP from its images' counts times how often
    each was drawn is the AP of the drawn images' rows copied, to the last bit, and the full
    set's difference is the difference of the recorded APs."""
    rng = np.random.default_rng(8)
    pairs, recorded = [], []
    for seed in range(2):
        gt, base, variant = _wider_case(rng)
        found = []
        for name, predictions in (("variant", variant), ("base", base)):
            folder = tmp_path / f"{name}-{seed}"
            folder.mkdir()
            ev = WiderEval(gt, predictions)
            rows = [row for s in SETTINGS for row in ev.image_rows(s)]
            (folder / "samples_wider_single.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows))
            found.append((folder, ev.summarize()["hard"]))
        recorded.append(found[0][1] - found[1][1])
        per = WIDER.per_example("single.hard")
        assert per is not None and per.summed and per.correct is None
        own, other = (paired.example_arrays(paired.samples_of(f, "wider", per.samples) or [],
                                            per) for f, _ in found)
        assert own is not None and other is not None and own[0] == other[0]
        assert len(own[0]) == len(gt.boxes)  # an image a row
        assert per.aggregate(own[1]) == found[0][1]
        pairs.append((own[1], other[1]))
    summed = paired.paired_bootstrap(pairs, per, resamples=300)
    copying = paired.paired_bootstrap([(a.toarray(), b.toarray()) for a, b in pairs],
                                      dataclasses.replace(per, summed=False), resamples=300)
    assert summed == copying
    assert summed.diff == pytest.approx(np.mean(recorded), abs=1e-12)
    assert summed.high < 0 and summed.p == pytest.approx(2 / 301)  # a third of faces missed
    assert (summed.test, summed.seeds, summed.examples) == ("paired bootstrap", 2, 80)
    assert WIDER.per_example("pyramid.easy") is not None
    for name in ("single.ms_per_image", "single", "other.hard", "single.hard.x"):
        assert WIDER.per_example(name) is None


def test_fddb_pairs_images_and_wide_sums_are_made_a_few_resamples_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FDDB's rows are 3 numbers per distinct score of the whole set: a resample's sums are
    made a few resamples per product, and still give the copying bootstrap's test."""
    fddb = FDDB.per_example("single.tpr_disc@3")
    assert fddb is not None and fddb.summed
    rows = []
    for detector in range(2):
        rng = np.random.default_rng(10 + detector)
        faces = {f"img_{i}": np.c_[np.full((2, 2), 4.0), [0.0, 0.0], [8.0, 30.0], [10.0, 10.0]]
                 for i in range(40)}
        dets = {n: np.c_[f[:, 3:4] - 4 + rng.integers(-3, 4, (2, 1)),
                         f[:, 4:5] - 4 + rng.integers(-3, 4, (2, 1)), np.full((2, 2), 8.0),
                         rng.random((2, 1))] for n, f in faces.items()}
        ev = FDDBEval(faces, dets, dict.fromkeys(faces, (40, 20)))
        rows.append((paired.example_arrays(ev.image_rows(), fddb), ev.summarize(3)))
    (own, first), (base, second) = rows
    assert own is not None and base is not None and own[0] == base[0]
    assert fddb.aggregate(own[1]) == first["tpr_disc@3"]
    wide = [(own[1], base[1])]
    monkeypatch.setattr(paired, "_SUM_CELLS", own[1].shape[1] * 3)  # 3 resamples a product
    chunked = paired.paired_bootstrap(wide, fddb, resamples=200)
    assert chunked == paired.paired_bootstrap([(own[1].toarray(), base[1].toarray())],
                                              dataclasses.replace(fddb, summed=False),
                                              resamples=200)
    assert chunked.diff == pytest.approx(first["tpr_disc@3"] - second["tpr_disc@3"])


def test_a_wider_report_tests_a_variant_over_images(tmp_path: Path) -> None:
    """From the run folders through the report's numbers: each setting its own test, a run
    without per-image rows (an older one) none."""
    rng = np.random.default_rng(9)
    gt, base, variant = _wider_case(rng, images=50)
    store = Store(tmp_path)
    for name, predictions in (("full", base), ("headless", variant), ("old", variant)):
        ev = WiderEval(gt, predictions)
        aps = ev.summarize()
        store.begin(SUITE, name, 0, name, {"budget": {"images": 10}}, {"started": "2025-01-01"})
        store.finish(name, {f"wider.single.{s}": aps[s] for s in SETTINGS}, [], {}, {})
        if name != "old":
            (tmp_path / SUITE / name / "samples_wider_single.jsonl").write_text("".join(
                json.dumps(r) + "\n" for s in SETTINGS for r in ev.image_rows(s)))
    metrics = [f"wider.single.{s}" for s in SETTINGS]
    spec = make_spec(suite=SUITE, variants=["full", "headless", "old"], reference={},
                     table=None, baseline="full", metrics=metrics,
                     higher_is_better=dict.fromkeys(metrics, True), proxies=[])
    summary = report_tables(spec, load_suite_data(tmp_path / "index.sqlite", SUITE)
                            )["main"].numbers
    for metric in metrics:
        row = summary.loc[("headless", metric)]
        assert (row["example_test"], row["example_seeds"], row["examples"]) == (
            "paired bootstrap", 1, 50)
        assert row["example_diff"] == pytest.approx(
            summary.loc[("headless", metric), "mean"] - summary.loc[("full", metric), "mean"],
            abs=1e-12)
        assert row["example_low"] <= row["example_diff"] <= row["example_high"]
        assert pd.isna(summary.loc[("old", metric), "example_test"])
    line = verdict(spec, "headless", "wider.single.hard", summary.loc[("headless",
                                                                       "wider.single.hard")])
    assert "paired bootstrap over 50 examples × 1 seed" in line
