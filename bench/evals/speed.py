"""Face-detector speed as the SSH paper's Table 2 reports it: ms per image at maximum input sizes,
on synthetic images, every size and mode timed in the same interleaved rounds (see
`bench.util.timing`). Metrics: `<mode>.<short>x<long>_ms` (the median), with its `.iqr` and `.n`."""

from pydantic import Field

from bench.evals.adapters import FaceDetector, Mode
from bench.evals.evaluator import EvalResult, EvalSetting, Evaluator, PerExample
from bench.schema import Int, Strict
from bench.util.timing import Timing


class SpeedEvalConfig(Strict):
    """ms per image at maximum input sizes (short, long), as the SSH paper's Table 2."""

    sizes: list[tuple[Int, Int]] = [(400, 800), (600, 1000), (800, 1200), (1200, 1600)]
    modes: list[Mode] = ["single"]
    warmup: Int = Field(2, ge=0)
    repeats: Int = Field(5, gt=0)
    channels_last: bool = Field(False, description="channels-last memory format (GPU speed-up)")


class SpeedEvaluator:
    """ms per image of a face detector on the device it runs on; reads no data."""

    name = "speed"
    config_model = SpeedEvalConfig
    needs = FaceDetector

    def higher_is_better(self, metric: str) -> bool | None:
        """The median is better lower; its spread and count are neither."""
        return False if metric.endswith("_ms") else None

    def metrics(self, config: SpeedEvalConfig) -> list[str]:
        return [name for mode in config.modes for short, long in config.sizes
                for name in Timing.names(_timed(mode, short, long))]

    def is_proxy(self, config: SpeedEvalConfig) -> bool:
        return False  # synthetic images: it times, it scores no data set

    def per_example(self, metric: str) -> PerExample | None:
        """None: timings of synthetic images: nothing is scored per example."""
        return None

    def inputs(self, config: SpeedEvalConfig, data_root: str | None) -> dict[str, str]:
        return {}

    def check(self, config: SpeedEvalConfig, data_root: str | None) -> None:
        """Synthetic images: nothing to find."""

    def evaluate(self, config: SpeedEvalConfig, model: FaceDetector,
                 setting: EvalSetting) -> EvalResult:
        timings = model.time([(short, long) for short, long in config.sizes], config.modes,
                             warmup=config.warmup, repeats=config.repeats,
                             channels_last=config.channels_last)
        metrics: dict[str, float] = {}
        for (mode, (short, long)), timing in timings.items():
            metrics |= timing.metrics(_timed(mode, short, long))
        return EvalResult(metrics)


def _timed(mode: str, short: int, long: int) -> str:
    """The name of a mode's median ms per image at one size."""
    return f"{mode}.{short}x{long}_ms"


EVALUATOR: Evaluator[SpeedEvalConfig, FaceDetector] = SpeedEvaluator()
