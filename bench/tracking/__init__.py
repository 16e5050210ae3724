"""Experiment trackers a training run reports to while it trains (TensorBoard, MLflow, Weights &
Biases), each behind one small protocol (`tracker.Tracker`), named by a suite's `tracking:` or
`--track`; a tracker's package is imported only where it is named.

May import: the ground floor (`bench.errors`, `bench.schema`) and `bench.util`."""
