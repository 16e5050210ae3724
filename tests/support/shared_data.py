"""Where the real data sets beside the project live (../shared/data, or $BENCH_SHARED_DATA).

They are never copied into the project; what needs them skips cleanly when they are absent."""

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("BENCH_SHARED_DATA",
                                  Path(__file__).resolve().parents[3] / "shared" / "data"))
