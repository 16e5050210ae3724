"""TensorBoard's own web UI, in headless Chromium, on the event files a tracked run wrote: the
run and its loss curve are there, drawn, without errors. (MLflow's UI ships only in the full
`mlflow` wheel, which the registry pins cannot install beside this environment; its client and
server are tested in test_tracking.py.)"""

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from support.browser import FLAGS, TIMEOUT_MS
from support.processes import free_ports
from test_checkpoints import train

from bench.execution.live import LiveRun
from bench.tracking.tracker import TrackedRun, Trackers


@pytest.fixture
def tensorboard(tmp_path: Path):
    """A tracked toy run's folder under `tmp_path/suite`, served by `tensorboard --logdir`."""
    import logging

    folder = tmp_path / "suite" / "0123456789ab"
    live = LiveRun(folder, ["toy"], [], Trackers(("tensorboard",), logging.getLogger("test")),
                   TrackedRun("0123456789ab", "suite", "toy", 0, "12 steps", {"lr": 0.01},
                              folder, None, resumed_at=0))
    train(folder / "checkpoints", listener=live)
    live.close("finished")
    (port,) = free_ports(1)
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(tmp_path / "suite"),
         "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/data/runs", timeout=5) as answer:
                    if b"0123456789ab" in answer.read():
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "tensorboard did " \
                "not start"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_tensorboard_shows_the_run_and_its_loss_curve(chromium: Path, tensorboard: str,
                                                       tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium, headless=True, args=list(FLAGS),
            timeout=TIMEOUT_MS, viewport={"width": 1400, "height": 900})
        try:
            page = browser.pages[0]
            page.set_default_timeout(TIMEOUT_MS)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{tensorboard}/#timeseries", wait_until="load")
            page.locator("input[placeholder='Filter tags (regex)']").fill("^curve/loss$")
            card = page.locator("card-view", has_text="curve/loss").first
            card.wait_for(state="visible")
            chart = card.locator("line-chart").first
            chart.wait_for(state="visible")
            box = chart.bounding_box()
            runs = page.locator("text=0123456789ab/tensorboard").count()
            page.screenshot(path=str(tmp_path / "tensorboard.png"))
        finally:
            browser.close()
    assert errors == []
    assert runs >= 1, "the run is listed"
    assert box is not None and box["width"] > 100 and box["height"] > 100
