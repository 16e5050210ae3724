"""A suite's `resources:` block: defaults, validation with places, command-line overrides, the
sbatch file submitit writes from it, and run ids that do not depend on it."""

import os
import re
from pathlib import Path

import pytest
import submitit
from support.store_suite import write_suite
from test_suite import BASE as SUITE_BASE

from bench.cli import main
from bench.config.plan import plan
from bench.config.suite import derive_variant, load_suite
from bench.errors import UserError
from bench.resources import Resources

BASE = SUITE_BASE.replace("suite: t-suite", "suite: t-resources")
BLOCK = """\
resources:
  nodes: 2
  gpus_per_node: 8
  cpus_per_task: 10
  mem_gb: 480
  timeout_min: 2880
  partition: gpu
  account: lm-team
  qos: high
  sbatch: {exclusive: "", mail-type: END}
  setup: [module load cuda/12.4, export NCCL_DEBUG=WARN]
"""


def suite_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_defaults_give_one_process_without_gpus():
    r = Resources()
    assert (r.nodes, r.gpus_per_node, r.tasks_per_node, r.cpus_per_task) == (1, 0, 1, 4)
    assert (r.mem_gb, r.timeout_min, r.partition, r.sbatch, r.setup) == (None, 1440, None, {}, [])
    assert r.processes == 1
    assert r.submitit_parameters() == {"nodes": 1, "tasks_per_node": 1, "cpus_per_task": 4,
                                       "timeout_min": 1440, "slurm_signal_delay_s": 90}


def test_one_process_per_gpu_on_every_node():
    r = Resources(nodes=2, gpus_per_node=8)
    assert r.tasks_per_node == 8 and r.processes == 16
    assert Resources(nodes=3, tasks_per_node=2).processes == 6  # CPU processes (gloo)
    assert Resources(gpus_per_node=4, tasks_per_node=4).processes == 4


def test_suite_block_and_variant_override(tmp_path):
    text = BASE + BLOCK.replace("gpus_per_node: 8", "gpus_per_node: 4")
    text = text.replace("  softmax: {}", "  softmax: {resources: {gpus_per_node: 8, "
                        "sbatch: {comment: big}}}")
    suite = load_suite(suite_file(tmp_path, text), env={})
    small, big = suite.variants["cwt"].resources, suite.variants["softmax"].resources
    assert suite.head.resources == small
    assert (small.gpus_per_node, small.tasks_per_node, small.processes) == (4, 4, 8)
    # the override merges over the suite's block; the default tasks_per_node follows the GPUs
    assert (big.gpus_per_node, big.tasks_per_node, big.processes, big.partition) == (
        8, 8, 16, "gpu")
    assert big.sbatch == {"exclusive": "", "mail-type": "END", "comment": "big"}
    trial = derive_variant(suite.family, suite.variants["softmax"], "trial-0000",
                           {"train.optim.lr": 2e-3})
    assert trial.resources == big


def test_resources_leave_run_ids_unchanged(tmp_path):
    path = write_suite(tmp_path)
    before = [(r.variant.name, r.seed, r.run_id)
              for r in plan(load_suite(path), cache_dir=tmp_path)]
    text = path.read_text().replace(
        "head: embedding_transpose}", "head: embedding_transpose, resources: {nodes: 4}}")
    path.write_text(text + BLOCK)
    suite = load_suite(path)
    assert suite.variants["cwt"].resources.processes == 32  # the blocks were read
    after = [(r.variant.name, r.seed, r.run_id) for r in plan(suite, cache_dir=tmp_path)]
    assert after == before


def test_variants_differing_only_in_resources_are_refused(tmp_path):
    # they would be the same runs (same ids), trained twice under two names
    text = BASE.replace("  cwt: {objective: cwt, head: embedding_transpose}",
                        "  big: {resources: {gpus_per_node: 8}}")
    with pytest.raises(UserError, match=r"variants\.big: resolves to the same config"):
        load_suite(suite_file(tmp_path, text), env={})


BAD_BLOCKS = [
    ("resources: {gpus_per_node: x}", "suite.yaml:20", "resources.gpus_per_node",
     "valid integer"),
    ("resources: {gpus_per_node: true}", "suite.yaml:20", "resources.gpus_per_node",
     "valid integer"),
    ("resources: {gpu: 8}", "suite.yaml:20", "resources.gpu", "unknown key"),
    ("resources:\n  gpus_per_node: 8\n  tasks_per_node: 4", "suite.yaml:22",
     "resources.tasks_per_node", "one process per GPU"),
    ("resources:\n  sbatch:\n    exclusive: ''\n    partition: gpu", "suite.yaml:23",
     "resources.sbatch.partition", "set resources.partition instead"),
    ("resources:\n  sbatch: {--exclusive: ''}", "suite.yaml:21", "resources.sbatch.--exclusive",
     "without leading dashes"),
    ("resources:\n  sbatch: {gres: 'gpu:8'}", "suite.yaml:21", "resources.sbatch.gres",
     "set resources.gpus_per_node instead"),
    ("resources:\n  sbatch: {part: gpu}", "suite.yaml:21", "resources.sbatch.part",
     "sets --partition"),
    ("resources:\n  sbatch: {job-name: x}", "suite.yaml:21", "resources.sbatch.job-name",
     "the executor sets it"),
    ("resources:\n  sbatch: {signal: 'USR2@300'}", "suite.yaml:21", "resources.sbatch.signal",
     "set resources.signal_lead_s instead"),
    ("resources:\n  timeout_min: 2\n  signal_lead_s: 120", "suite.yaml:22",
     "resources.signal_lead_s", "shorter than timeout_min (120 s)"),
    ("resources:\n  sbatch: {exclusive: true}", "suite.yaml:21", "resources.sbatch.exclusive",
     "text or an integer"),
    ("resources:\n  sbatch: {comment: \"a\\nb\"}", "suite.yaml:21", "resources.sbatch.comment",
     "one line"),
    ("resources: {partition: ''}", "suite.yaml:20", "resources.partition", "at least 1"),
    ("resources: {mem_gb: 0.0001}", "suite.yaml:20", "resources.mem_gb",
     "greater than or equal to 0.001"),
]


@pytest.mark.parametrize(("block", "line", "field", "problem"), BAD_BLOCKS,
                         ids=[b[2] for b in BAD_BLOCKS])
def test_malformed_block_names_file_line_and_field(tmp_path, block, line, field, problem):
    with pytest.raises(UserError) as err:
        load_suite(suite_file(tmp_path, BASE + block + "\n"), env={})
    assert f"{line}: {field}: " in str(err.value)
    assert problem in str(err.value)


BAD_OVERRIDES = [
    ("{resources: {gpus_per_node: x}}", "variants.softmax.resources.gpus_per_node",
     "valid integer"),
    ("{resources: {gpu: 8}}", "variants.softmax.resources.gpu", "unknown key"),
    ("{resources: {tasks_per_node: 4, gpus_per_node: 8}}",
     "variants.softmax.resources.tasks_per_node", "one process per GPU"),
    ("{resources: {sbatch: {partition: gpu}}}", "variants.softmax.resources.sbatch.partition",
     "set resources.partition instead"),
    ("{resources: 8}", "variants.softmax.resources", "expected a mapping"),
]


@pytest.mark.parametrize(("override", "field", "problem"), BAD_OVERRIDES,
                         ids=[b[1] for b in BAD_OVERRIDES])
def test_malformed_variant_override_is_placed_at_the_variant(tmp_path, override, field, problem):
    text = BASE.replace("  softmax: {}", f"  softmax: {override}")
    with pytest.raises(UserError) as err:
        load_suite(suite_file(tmp_path, text), env={})
    assert f"suite.yaml:17: {field}: " in str(err.value)  # the variant's line
    assert problem in str(err.value)


def test_an_inherited_tasks_per_node_conflicting_with_a_variants_gpus(tmp_path):
    text = BASE + "resources: {gpus_per_node: 4, tasks_per_node: 4}\n"
    text = text.replace("  softmax: {}", "  softmax: {resources: {gpus_per_node: 8}}")
    with pytest.raises(UserError, match=r"suite.yaml:17: variants.softmax.resources."
                                        r"tasks_per_node: 4 processes per node"):
        load_suite(suite_file(tmp_path, text), env={})


def test_validate_exits_2_naming_the_field(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite_file(tmp_path, BASE + "resources:\n  nodes: 2\n  gpus_per_node: '8'\n")
    assert main(["validate", "suite.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "suite.yaml:22: resources.gpus_per_node: " in err
    assert "Traceback" not in err


def test_override_sets_and_adds():
    base = Resources(gpus_per_node=4, partition="cpu", sbatch={"comment": "x"})
    r = base.override(["gpus_per_node=8", "partition=gpu", "sbatch.exclusive=", "mem_gb=64",
                       "account=null", "sbatch.mail-type=END", "nodes=2"])
    assert (r.gpus_per_node, r.tasks_per_node, r.partition, r.mem_gb, r.nodes) == (
        8, 8, "gpu", 64.0, 2)
    assert r.sbatch == {"comment": "x", "exclusive": "", "mail-type": "END"}
    assert base.override(["partition=null"]).partition is None
    assert base.override([]) == base


@pytest.mark.parametrize(("assignment", "message"), [
    ("gpus_per_node=x", "--resource gpus_per_node=x: gpus_per_node: Input should be a valid "
                        "integer"),
    ("gpus_per_node=1.5", "--resource gpus_per_node=1.5: gpus_per_node: "),
    ("gpu=8", "--resource gpu=8: unknown resource (known: nodes, gpus_per_node,"),
    ("nodes.x=1", "--resource nodes.x=1: unknown resource"),
    ("nodes", "--resource nodes: expected KEY=VALUE"),
    ("tasks_per_node=2", "--resource tasks_per_node=2: tasks_per_node: 2 processes per node "
                         "with gpus_per_node 4"),
    ("sbatch.partition=gpu", "--resource sbatch.partition=gpu: sbatch.partition: sets "
                             "--partition: set resources.partition instead"),
    ("sbatch.--exclusive=", "--resource sbatch.--exclusive=: sbatch.--exclusive: give the flag "
                            "name without leading dashes"),
    ("timeout_min=0", "--resource timeout_min=0: timeout_min: "),
    ("setup=module load cuda", "--resource setup=module load cuda: give setup in the suite"),
    ("partition=8", "--resource partition=8: partition: Input should be a valid string"),
])
def test_override_refuses_naming_the_assignment(assignment, message):
    with pytest.raises(UserError) as err:
        Resources(gpus_per_node=4).override([assignment])
    assert str(err.value).startswith(message)


@pytest.fixture
def slurm_executor(tmp_path, monkeypatch):
    """submitit's own SLURM executor, which writes sbatch files; it only needs an `srun` on the
    PATH to start (nothing is submitted)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return submitit.SlurmExecutor(tmp_path / "jobs")


def sbatch_text(executor: submitit.SlurmExecutor, resources: Resources) -> str:
    """The sbatch file submitit writes with `resources`, its parameters passed the way
    `AutoExecutor.update_parameters` passes them (shared names converted by the executor,
    `slurm_` ones without their prefix)."""
    params = resources.submitit_parameters()
    slurm = {k.removeprefix("slurm_"): v for k, v in params.items() if k.startswith("slurm_")}
    executor.update_parameters(**executor._convert_parameters(
        {k: v for k, v in params.items() if not k.startswith("slurm_")}), **slurm)
    return executor._make_submission_file_text("python -m bench run suite.yaml", "u")


def test_parameter_names_are_autoexecutors():
    params = Resources(gpus_per_node=2, mem_gb=8, partition="p", account="a", constraint="c",
                       qos="q", sbatch={"exclusive": ""}, setup=["true"]).submitit_parameters()
    shared = {k for k in params if not k.startswith("slurm_")}
    slurm = {k.removeprefix("slurm_") for k in params if k.startswith("slurm_")}
    assert shared == {"nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb",
                      "timeout_min"}
    assert shared <= submitit.AutoExecutor._valid_parameters()
    assert slurm == {"partition", "account", "constraint", "qos", "additional_parameters",
                     "setup", "signal_delay_s"}
    assert slurm <= submitit.SlurmExecutor._valid_parameters()


def test_submitit_writes_the_sbatch_file_asked_for(tmp_path, slurm_executor):
    resources = load_suite(suite_file(tmp_path, BASE + BLOCK), env={}).head.resources
    text = sbatch_text(slurm_executor, resources)
    lines = text.splitlines()
    for flag in ["--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=8", "--cpus-per-task=10",
                 "--mem=480GB", "--time=2880", "--partition=gpu", "--account=lm-team",
                 "--qos=high", "--exclusive", "--mail-type=END"]:
        assert f"#SBATCH {flag}" in lines, (flag, text)
    setup = lines.index("# setup")
    assert lines[setup + 1: setup + 3] == ["module load cuda/12.4", "export NCCL_DEBUG=WARN"]
    assert lines.index("# command") > setup + 2  # before the job starts
    assert slurm_executor._num_tasks() == resources.processes == 16


@pytest.mark.parametrize("resources, flag", [
    (Resources(), "USR2@90"),  # submitit's default for a day's limit
    (Resources(timeout_min=6), "USR2@90"),
    (Resources(timeout_min=1), "USR2@15"),  # a quarter of a short limit: SLURM may warn early
    (Resources(timeout_min=4), "USR2@60"),
    (Resources(timeout_min=60, signal_lead_s=600), "USR2@600"),  # a large model's checkpoint
])
def test_the_warning_before_the_time_limit_fits_the_limit(slurm_executor, resources, flag):
    assert f"#SBATCH --signal={flag}" in sbatch_text(slurm_executor, resources).splitlines()


def test_submitit_without_gpus_asks_for_none(slurm_executor):
    text = sbatch_text(slurm_executor, Resources(cpus_per_task=2, mem_gb=1.5))
    flags = [line.split("=")[0] for line in text.splitlines() if line.startswith("#SBATCH")]
    assert not [f for f in flags if "gpu" in f or "gres" in f], flags
    assert "#SBATCH --ntasks-per-node=1" in text and "#SBATCH --mem=1536MB" in text
    assert "#SBATCH --time=1440" in text and "# setup" not in text


def test_local_executor_takes_the_shared_parameters(tmp_path):
    executor = submitit.LocalExecutor(tmp_path / "jobs")
    params = Resources(tasks_per_node=2, timeout_min=30).submitit_parameters()
    executor.update_parameters(**{k: v for k, v in params.items() if not k.startswith("slurm_")})
    assert executor._num_tasks() == 2 and executor.parameters["timeout_min"] == 30


# sinfo --noheader --Node --format='%P|%c|%m|%G|%l' on a cluster of two partitions: `cpu`, the
# default, of 2-CPU nodes, and `a100` of 8-GPU nodes with a 2-day limit (SLURM 22.05 to 24.x)
SINFO = """\
cpu*|2|7000|(null)|infinite
cpu*|2|7000|(null)|infinite
a100|64|500000|gpu:a100:8(S:0-1)|2-00:00:00
a100|64|500000|gpu:8,mps:400|2-00:00:00
"""


def test_sinfo_lines_read_as_nodes():
    from bench.execution.partition import parse_nodes

    nodes = parse_nodes(SINFO + "garbage\ncpu|x|1|(null)|1:00\n")
    read = [(n.partition, n.default, n.cpus, n.memory_mb, n.gpus, n.limit_min) for n in nodes]
    assert read == [("cpu", True, 2, 7000, 0, float("inf"))] * 2 + [
        ("a100", False, 64, 500000, 8, 2880)] * 2


@pytest.mark.parametrize(("over", "message"), [
    ({"cpus_per_task": 4}, "resources.cpus_per_task 4 (x 1 tasks a node): a node of the job "
     "needs 4 CPUs; the nodes of partition 'cpu' have at most 2 (sinfo)"),
    ({"mem_gb": 8}, "resources.mem_gb 8: a node of the job needs 8192 MB of memory; the nodes "
     "of partition 'cpu' have at most 7000"),
    ({"gpus_per_node": 1}, "resources.gpus_per_node 1: a node of the job needs 1 GPUs; the "
     "nodes of partition 'cpu' have at most 0"),
    ({"nodes": 3, "cpus_per_task": 1}, "resources.nodes 3: partition 'cpu' has 2 nodes"),
    ({"partition": "a100", "gpus_per_node": 8, "timeout_min": 5000},
     "resources.timeout_min 5000: partition 'a100' lets a job run 2880 minutes at most"),
    ({"partition": "h100"}, "resources.partition 'h100': no such partition on this cluster "
     "(sinfo lists a100, cpu)"),
])
def test_a_job_no_node_can_take_is_refused_naming_the_field(over, message):
    from bench.execution.partition import fitted, parse_nodes

    with pytest.raises(UserError, match=re.escape(message)):
        fitted(Resources().merged(over), parse_nodes(SINFO))


def test_a_default_a_node_cannot_give_is_lowered_to_fit():
    from bench.execution.partition import fitted, parse_nodes

    nodes = parse_nodes(SINFO)
    resources, notes = fitted(Resources(), nodes)
    assert resources.cpus_per_task == 2
    assert notes == ["resources.cpus_per_task: 2, not the default 4: the nodes of partition "
                     "'cpu' have at most 2 CPUs"]
    assert fitted(Resources().merged({"partition": "a100", "gpus_per_node": 8}), nodes) == (
        Resources().merged({"partition": "a100", "gpus_per_node": 8}), [])  # 8 x 4 <= 64
    # two tasks a node share the CPUs
    two = Resources().merged({"tasks_per_node": 2})
    assert fitted(two, nodes)[0].cpus_per_task == 1
