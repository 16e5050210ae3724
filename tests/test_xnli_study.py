"""The multilingual study end to end on fixture data: a DistilBERT-style encoder (the preset,
shrunk) pretrained with a softmax head and with CWT on a three-language corpus folder, on a
two-rung wsd ladder, fine-tuned on XNLI by both protocols, and reported with the Table 5 layout
and the compute section."""

import json
import re
from pathlib import Path

import pytest
from test_multilingual_data import _write_languages, wordpiece  # noqa: F401 (a fixture)
from test_xnli_eval import write_tsv_root

from bench.cli import main

pytestmark = pytest.mark.slow

LANGUAGES = ["en", "de", "fr"]
SUITE = """\
suite: xnli-study
family: encoder
seeds: [0, 1]
budget: {{steps: [2, 4]}}
model: {{preset: distilbert-multilingual, hidden_size: 32, num_layers: 2, num_heads: 2,
         intermediate_size: 64, context: 64}}
data:
  train: "{corpus}"
  languages: [en, de, fr]
  sampling: {{alpha: 0.3}}
  val_fraction: 0.1
  seq_len: 32
  tokenizer: {{path: "{tokenizer}"}}
train:
  batch_size: 8
  optim: {{lr: 1.0e-3, warmup: 1, schedule: wsd, decay: 0.5, min_lr_ratio: 0.0}}
  checkpoint_every: 100
  validate_every: 100
  val_batches: 3
objective: softmax
evals:
  - xnli:
      path: "{xnli}"
      languages: [en, de, fr]
      finetune: {{epochs: 2, batch_size: 4, max_seq_len: 32}}
variants:
  vanilla: {{}}
  headless: {{objective: cwt}}
report:
  baseline: vanilla
  metrics: [xnli.zero_shot.avg, xnli.translate_train.avg]
  table:
    title: "XNLI average accuracy"
    columns: [xnli.zero_shot.avg, xnli.translate_train.avg]
    labels: {{xnli.zero_shot.avg: "English fine-tuning",
             xnli.translate_train.avg: "target-language fine-tuning"}}
    scale: 100
reference:
  vanilla: {{xnli.zero_shot.avg: 0.5537, xnli.translate_train.avg: 0.6287}}
  headless: {{xnli.zero_shot.avg: 0.5736, xnli.translate_train.avg: 0.6554,
             "xnli.zero_shot.avg:compute_ratio": 20}}
"""


def test_a_multilingual_suite_runs_both_protocols_and_reports_table_5(
        tmp_path: Path, wordpiece: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    suite = tmp_path / "xnli.yaml"
    suite.write_text(SUITE.format(corpus=_write_languages(tmp_path / "wiki"),
                                  tokenizer=wordpiece, xnli=write_tsv_root(tmp_path / "xnli")))
    results, reports = tmp_path / "results", tmp_path / "reports"
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count(": finished ->") == 8  # 2 variants x 2 rungs x 2 seeds
    runs = [json.loads(p.read_text()) for p in results.glob("xnli-study/*/metrics.json")]
    assert len(runs) == 8
    for metrics in runs:
        for protocol in ("zero_shot", "translate_train"):
            accs = [metrics[f"xnli.{protocol}.{lang}.acc"] for lang in LANGUAGES]
            assert all(0 <= a <= 1 for a in accs)
            assert metrics[f"xnli.{protocol}.avg"] == pytest.approx(sum(accs) / 3)
        assert metrics["train.steps"] in (2, 4)
    branched = [json.loads(p.read_text()).get("branched_from")
                for p in results.glob("xnli-study/*/provenance.json")]
    assert sum(b is not None for b in branched) == 4  # every lower rung started from its top
    provenance = json.loads(next(results.glob("xnli-study/*/provenance.json")).read_text())
    assert set(provenance["data.languages"]) == set(LANGUAGES)

    assert main(["report", str(suite), "--results", str(results), "--out", str(reports)]) == 0
    html = (reports / "xnli-study.html").read_text(encoding="utf-8")
    table = html[html.index("<h2>XNLI average accuracy</h2>"):]
    table = table[:table.index("</table>")]
    assert "English fine-tuning" in table and "target-language fine-tuning" in table
    cells = re.findall(r"<td[^>]*>(.*?)</td>", table)
    # Table 5's rows: each variant, then its paper numbers (x100)
    assert cells[cells.index("vanilla (paper)"):][:3] == ["vanilla (paper)", "55.37", "62.87"]
    assert cells[cells.index("headless (paper)"):][:3] == ["headless (paper)", "57.36", "65.54"]
    assert "<h2>Metric against compute</h2>" in html
    assert "Compute to match: xnli.zero_shot.avg" in html and "×20.00" in html
