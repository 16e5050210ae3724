"""squeue's lines read as SLURM 22.05 to 24.x print them, and the pending reasons that end a
wait: the parts of `bench/execution/queue.py` that need no cluster (tests/test_slurm.py runs the
rest on a real one)."""

import pytest

from bench.execution.queue import Queued, _queue_entry

# squeue --noheader --me --array --states=all --Format=<QUEUE_FORMAT> on SLURM 22.05, and the
# same fields padded to a width, as a version that pads a suffixed field would print them
LINES = """\
2|PENDING|PartitionConfig|0:00|0|capped|
1_0|RUNNING|None|1:02:03|2|debug|
1_1               |PENDING   |Resources      |0:00   |0    |debug    |
"""


def test_squeue_lines_are_read_by_field():
    entries = dict(e for line in LINES.splitlines() if (e := _queue_entry(line)))
    assert entries == {
        "2": Queued("PENDING", "PartitionConfig", "0:00", 0, "capped"),
        "1_0": Queued("RUNNING", "None", "1:02:03", 2, "debug"),
        "1_1": Queued("PENDING", "Resources", "0:00", 0, "debug"),
    }


@pytest.mark.parametrize("line", ["", "JOBID|STATE", "x_1|RUNNING|None|0:00|0|debug|",
                                  "squeue: error: Invalid user"])
def test_lines_that_are_not_jobs_are_left_out(line):
    assert _queue_entry(line) is None


@pytest.mark.parametrize("reason, never", [
    ("PartitionConfig", True), ("PartitionTimeLimit", True), ("PartitionNodeLimit", True),
    ("BadConstraints", True), ("InvalidQOS", True), ("DependencyNeverSatisfied", True),
    ("QOSMaxWallDurationPerJobLimit", True), ("AssocMaxCpuPerJobLimit", True),
    ("Resources", False), ("Priority", False), ("BeginTime", False), ("ReqNodeNotAvail", False),
    ("QOSGrpCpuLimit", False), ("AssocMaxJobsLimit", False), ("JobArrayTaskLimit", False),
    ("None", False),
])
def test_only_reasons_no_wait_cures_end_the_wait(reason, never):
    assert Queued("PENDING", reason, "0:00", 0, "p").never_starts is never
    assert not Queued("RUNNING", reason, "0:00", 0, "p").never_starts  # it started after all
