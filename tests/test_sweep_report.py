"""A suite's Optuna sweep in `bench report`, from a hand-built study and results store."""

import datetime as dt
import shlex
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from bench.cli import main
from bench.report import formatting
from bench.report import render as render_mod
from bench.report import study as study_mod
from bench.store.queries import study_runs
from bench.store.runs import Store

SUITE = "tiny-sweep"
STUDY = f"{SUITE}.sweep"
SUITE_FILE = """\
suite: tiny-sweep
family: lm
description: "CWT temperature and learning rate on a tiny GPT-NeoX"
seeds: [0]
budget: {flops: 1.0e+12}
model: {preset: tiny}
data:
  train: /nonexistent/train.jsonl
  val: /nonexistent/val.jsonl
  seq_len: 32
  tokenizer: {train_bpe: 512}
train:
  batch_size: 4
  optim: {lr: 3.0e-3}
objective: softmax
evals: []
variants:
  softmax: {}
  cwt: {objective: cwt, head: embedding_transpose}
sweep:
  variant: cwt
  trials: 4
  objective: {metric: val.nll, direction: minimize}
  pruner: {name: median, metric: val_nll, direction: minimize}
  space:
    cwt.temperature: {type: float, low: 0.05, high: 2.0, log: true}
    train.optim.lr: {type: float, low: 3.0e-4, high: 1.0e-2, log: true}
report:
  title: "Tiny sweep"
  baseline: softmax
  metrics: [val.nll]
"""
SPACE = {"cwt.temperature": FloatDistribution(0.05, 2.0, log=True),
         "train.optim.lr": FloatDistribution(3.0e-4, 1.0e-2, log=True)}
T0 = dt.datetime(2025, 3, 1, 9, 0, 0)
# number -> (state, temperature, lr, value, run id, seconds it took, user attrs besides run_id)
TRIALS: list[tuple[TrialState, float | None, float | None, float | None, str | None, int,
                   dict[str, Any]]] = [
    (TrialState.COMPLETE, 0.5, 3e-3, 4.8, "aaaa00000000", 125, {}),
    (TrialState.COMPLETE, 0.1, 1e-3, 4.5, "aaaa00000001", 3600, {}),
    (TrialState.PRUNED, 1.5, 8e-3, None, "aaaa00000002", 61, {}),
    (TrialState.FAIL, 0.07, 5e-4, None, "aaaa00000003", 30, {}),  # its worker died
    (TrialState.FAIL, None, None, None, None, 0, {"surplus": True}),
    (TrialState.COMPLETE, 0.07, 5e-4, 4.9, "aaaa00000003", 90, {"retry_of": 3, "retries": 1}),
    (TrialState.FAIL, 1.9, 1e-2, None, "aaaa00000006", 5, {"reason": "non-finite loss at step 3"}),
    (TrialState.RUNNING, 0.3, 2e-3, None, "aaaa00000007", 0, {}),
    (TrialState.WAITING, 0.3, 2e-3, None, None, 0, {"retry_of": 7, "retries": 1}),
]
INTERMEDIATE = {2: {30: 6.0, 60: 5.9}, 1: {30: 5.2, 60: 4.9}}


def build_study(path: Path) -> None:
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize")
    for number, (state, temp, lr, value, run, seconds, attrs) in enumerate(TRIALS):
        params = {} if temp is None else {"cwt.temperature": temp, "train.optim.lr": lr}
        trial = create_trial(
            state=state, value=value, params=params,
            distributions={k: SPACE[k] for k in params},
            user_attrs={**({"run_id": run} if run else {}), "worker": {"host": "h", "pid": 1},
                        **attrs},
            intermediate_values=INTERMEDIATE.get(number, {}))
        if state not in (TrialState.RUNNING, TrialState.WAITING):
            trial.datetime_start = T0 + dt.timedelta(hours=number)
            trial.datetime_complete = trial.datetime_start + dt.timedelta(seconds=seconds)
        study.add_trial(trial)


def run_config(temperature: float, lr: float) -> dict[str, Any]:
    return {"family": "lm", "seed": 0, "budget": {"flops": 1e12}, "evals": [],
            "config": {"model": {"preset": "tiny"}, "objective": "cwt",
                       "cwt": {"temperature": temperature},
                       "train": {"batch_size": 4, "optim": {"lr": lr, "betas": [0.9, 0.95]}}}}


def record_trial_runs(store: Store) -> None:
    """The trials' runs: complete ones finished with their value, the pruned one pruned."""
    for number, (state, temp, lr, value, run, _, attrs) in enumerate(TRIALS):
        if run is None or "retry_of" in attrs:
            continue
        store.begin(STUDY, f"trial-{number:04d}", 0, run, run_config(temp, lr),
                    {"started": f"2025-03-01T{9 + number:02d}:00:00"})
        if state == TrialState.COMPLETE:
            store.finish(run, {"val.nll": value}, [], {"ended": "2025-03-01T12:00:00"})
        elif state == TrialState.PRUNED:
            store.fail(run, "val_nll = 5.9 at 60% of the budget", "2025-03-01T11:01:01",
                       state="pruned")
    # Trial 5 retried trial 3: the same run id, resumed and finished.
    store.finish("aaaa00000003", {"val.nll": 4.9}, [], {"ended": "2025-03-01T14:01:30"})


class Page(HTMLParser):
    """Tables by class (header and body rows as cell texts), figures' SVG text, all text."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.figures: list[str] = []
        self.config: list[tuple[str, str]] = []  # (class, text) of the best run's config
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._li: tuple[str, list[str]] | None = None
        self._in_config = False
        self._svg_depth = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class") or ""
        if tag == "table":
            self._table = cls
            self.tables[cls] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "ul" and cls == "config":
            self._in_config = True
        elif tag == "li" and self._in_config:
            self._li = (cls, [])
        elif tag == "svg":
            if self._svg_depth == 0:
                self.figures.append("")
            self._svg_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "ul":
            self._in_config = False
        elif tag == "li" and self._li is not None:
            self.config.append((self._li[0], "".join(self._li[1]).strip()))
            self._li = None
        elif tag == "svg":
            self._svg_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._li is not None:
            self._li[1].append(data)
        if self._svg_depth:
            self.figures[-1] += data
        else:
            self.text.append(data)

    @property
    def plain(self) -> str:
        return " ".join("".join(self.text).split())


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "suite.yaml"
    path.write_text(SUITE_FILE)
    return path


@pytest.fixture(scope="module")
def report(suite_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The study in its own journal, the trials' runs in the store, no run of the suite's own
    variants; `bench report` renders HTML and PDF once for the module."""
    root = tmp_path_factory.mktemp("sweep")
    journal, results, out = root / "study.journal", root / "results", root / "reports"
    build_study(journal)
    record_trial_runs(Store(results))
    assert main(["report", str(suite_file), "--results", str(results), "--out", str(out),
                 "--storage", str(journal)]) == 0
    return out / f"{SUITE}.html", out / f"{SUITE}.pdf", journal


@pytest.fixture(scope="module")
def page(report: tuple[Path, Path, Path]) -> Page:
    return Page(report[0].read_text(encoding="utf-8"))


def test_counts_by_state_keep_surplus_apart(page: Page) -> None:
    assert page.tables["counts"] == [
        ["complete", "pruned", "failed", "surplus, never run", "running", "waiting"],
        ["3", "1", "2", "1", "1", "1"],
    ]


def test_best_trial_names_value_params_run_and_config(page: Page) -> None:
    text = page.plain
    assert "Trial 1: val.nll = 4.5 (minimize) · run aaaa00000001" in text
    assert "Parameters: cwt.temperature = 0.1, train.optim.lr = 0.001" in text
    # Searched fields first and marked, then the rest of the resolved config by path.
    assert page.config == [
        ("searched", "config.cwt.temperature = 0.1"),
        ("searched", "config.train.optim.lr = 0.001"),
        ("", "budget.flops = 1000000000000.0"),
        ("", 'config.model.preset = "tiny"'),
        ("", 'config.objective = "cwt"'),
        ("", "config.train.batch_size = 4"),
        ("", "config.train.optim.betas = [0.9, 0.95]"),
        ("", "evals = []"),
        ("", 'family = "lm"'),
        ("", "seed = 0"),
    ]


def test_trials_table_has_a_row_per_trial_by_number(page: Page) -> None:
    dash = formatting.DASH
    assert page.tables["trials"] == [
        ["trial", "state", "val.nll", "cwt.temperature", "train.optim.lr", "run", "duration",
         "retry of", "reason"],
        ["0", "complete", "4.8000", "0.5", "0.003", "aaaa00000000", "0:02:05", dash, dash],
        ["1", "complete", "4.5000", "0.1", "0.001", "aaaa00000001", "1:00:00", dash, dash],
        ["2", "pruned", dash, "1.5", "0.008", "aaaa00000002", "0:01:01", dash, dash],
        ["3", "failed", dash, "0.07", "0.0005", "aaaa00000003", "0:00:30", dash, dash],
        ["4", "surplus", dash, dash, dash, dash, "0:00:00", dash, dash],
        ["5", "complete", "4.9000", "0.07", "0.0005", "aaaa00000003", "0:01:30", "3", dash],
        ["6", "failed", dash, "1.9", "0.01", "aaaa00000006", "0:00:05", dash,
         "non-finite loss at step 3"],
        ["7", "running", dash, "0.3", "0.002", "aaaa00000007", dash, dash, dash],
        ["8", "waiting", dash, "0.3", "0.002", dash, dash, "7", dash],
    ]


def test_figures_are_inline_svg_with_their_titles(page: Page) -> None:
    titles = ["Optimization history: val.nll (minimize)",
              "Parameter importances for val.nll (fANOVA)",
              "Parallel coordinates of the complete trials",
              "Intermediate values: val_nll as the pruner heard it"]
    assert len(page.figures) == len(titles)
    for svg, title in zip(page.figures, titles, strict=True):
        assert title in svg
    # The intermediate values' legend names the states of the trials that reported.
    assert "pruned" in page.figures[3] and "complete" in page.figures[3]


def test_dashboard_line_opens_the_same_journal(report: tuple[Path, Path, Path],
                                               page: Page) -> None:
    journal = report[2]
    assert f"Open the same study interactively: optuna-dashboard {shlex.quote(str(journal))}" \
        in page.plain


def test_variants_without_runs_leave_the_sweep_alone(page: Page) -> None:
    assert "none of its variants has a finished run: this report shows its sweep" in page.plain
    assert "main" not in page.tables and "Results by variant" not in page.plain


def test_pdf_is_written(report: tuple[Path, Path, Path]) -> None:
    assert report[1].read_bytes().startswith(b"%PDF")


def test_report_is_stable(report: tuple[Path, Path, Path], suite_file: Path, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering again from the same study and index gives the same HTML, byte for byte."""
    monkeypatch.setattr(render_mod.weasyprint, "HTML", _NoPdf)
    html, _, journal = report
    results = journal.parent / "results"
    assert main(["report", str(suite_file), "--results", str(results), "--out", str(tmp_path),
                 "--storage", str(journal)]) == 0
    assert (tmp_path / f"{SUITE}.html").read_bytes() == html.read_bytes()


class _NoPdf:
    """Stands in for WeasyPrint where a test reads only the HTML (the PDF is the slow part)."""

    def __init__(self, string: str):
        self.string = string

    def write_pdf(self, target: Path) -> None:
        Path(target).write_bytes(b"%PDF-stub")


def test_suite_without_a_study_renders_a_note(suite_file: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """No journal yet: the variants part as usual, a note with the command, nothing created."""
    monkeypatch.setattr(render_mod.weasyprint, "HTML", _NoPdf)
    results = tmp_path / "results"
    store = Store(results)
    store.begin(SUITE, "softmax", 0, "bbbb00000000", {"variant": "softmax"},
                {"started": "2025-03-01T09:00:00"})
    store.finish("bbbb00000000", {"val.nll": 5.25}, [], {"ended": "2025-03-01T10:00:00"})
    assert main(["report", str(suite_file), "--results", str(results),
                 "--out", str(tmp_path / "out")]) == 0
    page = Page((tmp_path / "out" / f"{SUITE}.html").read_text(encoding="utf-8"))
    journal = results / "sweeps" / f"{STUDY}.journal"
    assert (f"The study {STUDY} does not exist yet in {journal}. Run bench sweep {suite_file} "
            f"--results {results}, then this report again.") in page.plain
    assert page.tables["main"][2][:2] == ["softmax", "1"]
    assert "counts" not in page.tables and not journal.exists()


def test_storage_needs_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_FILE[:SUITE_FILE.index("sweep:\n")])
    assert main(["report", str(path), "--results", str(tmp_path), "--out", str(tmp_path),
                 "--storage", str(tmp_path / "x.journal")]) == 2
    assert "has no 'sweep:' block" in capsys.readouterr().err


def test_database_passwords_stay_out_of_the_report() -> None:
    url = "postgresql://bench:s3cret@db.example:5432/studies"
    assert study_mod.display_storage(url) == "postgresql://bench:***@db.example:5432/studies"
    assert study_mod.dashboard_command(url) == \
        "optuna-dashboard 'postgresql://bench:***@db.example:5432/studies'"
    assert study_mod.display_storage("results/sweeps/a b.journal") == "results/sweeps/a b.journal"
    assert study_mod.dashboard_command("results/sweeps/a b.journal") == \
        "optuna-dashboard 'results/sweeps/a b.journal'"


def test_durations_and_parameters_format() -> None:
    assert formatting.fmt_duration(3725.4) == "1:02:05"
    assert formatting.fmt_duration(None) == formatting.DASH
    assert formatting.fmt_param(0.000312345) == "0.0003123"
    assert formatting.fmt_param(16) == "16" and formatting.fmt_param("adamw") == "adamw"


def _in_memory(direction: str, trials: list[tuple[float, float, float]]) -> study_mod.SweepData:
    """A study of complete trials (temperature, lr, value) with nothing indexed."""
    study = optuna.create_study(direction=direction)
    for temp, lr, value in trials:
        study.add_trial(create_trial(params={"cwt.temperature": temp, "train.optim.lr": lr},
                                     distributions=SPACE, value=value))
    source = study_mod.SweepSource(study="s", storage="s.journal", metric="val.nll",
                                   direction=direction, params=list(SPACE), trials=4,
                                   reported="val_nll", command="bench sweep s.yaml")
    return study_mod.SweepData(source, study, study.trials, study_runs(Path("-"), "s"))


def test_importances_need_two_complete_trials_and_a_varying_parameter() -> None:
    assert study_mod.importance_params(_in_memory("minimize", [(0.5, 1e-3, 4.0)])) == []
    same_lr = _in_memory("minimize", [(0.5, 1e-3, 4.0), (0.2, 1e-3, 4.2)])
    assert study_mod.importance_params(same_lr) == ["cwt.temperature"]
    assert study_mod.importance_figure(same_lr) is not None
    assert study_mod.parallel_figure(_in_memory("minimize", [(0.5, 1e-3, 4.0)])) is None


def test_best_trial_follows_the_direction_and_breaks_ties_by_number() -> None:
    values = [(0.5, 1e-3, 4.0), (0.2, 2e-3, 3.0), (0.3, 3e-3, 3.0), (0.4, 4e-3, 5.0)]
    assert study_mod.best_trial(_in_memory("minimize", values)).number == 1
    assert study_mod.best_trial(_in_memory("maximize", values)).number == 3
