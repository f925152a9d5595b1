"""End to end: ``up`` on free ports, a worker runs a deployment, a browser finds it in the Prefect UI.

One Prefect server with its UI (the test harness serves none), the store and media servers,
the cloud pool's worker; the run is the nightly re-analysis deployment on a tiny dataset.
Chromium comes from ``scripts/install-browser.sh`` (``make test`` runs it); without it the
browser check is skipped, except under CI where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.ops import OpsSettings, State, down, up
from storage.federation.embedded import free_port
from tests.helpers.prefect_api import artifacts, flow_runs

from .browser import Browser, find_chromium
from .conftest import TinyModel, make_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpsSettings, State]]:
    settings = OpsSettings(
        home=tmp_path_factory.mktemp("ops-home"),
        prefect_port=free_port(),
        store_port=free_port(),
        media_port=free_port(),
        worker_pools=("scopeflow-cloud",),  # the run below goes to the cloud pool
        timeout_s=180.0,
        worker_poll_s=1.0,
    )
    state = up(settings, log=lambda _: None)
    try:
        yield settings, state
    finally:
        if settings.state_file.exists():
            down(settings, log=lambda _: None)


def test_worker_runs_a_deployment_and_the_ui_shows_it(
    running: tuple[OpsSettings, State], tmp_path: Path, tiny_model: TinyModel
) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings, state = running
    assert {s.name for s in state.services} == {
        "prefect-server",
        "store-server",
        "media-server",
        "worker-scopeflow-cloud",
    }
    assert all(s.alive() for s in state.services)
    path = make_dataset(tmp_path / "archive.zarr", frames=4)
    with temporary_settings({PREFECT_API_URL: settings.prefect_api_url}):
        run = run_deployment(
            "reprocess/reprocess-nightly",
            parameters={
                "dataset": str(path),
                "model": tiny_model.version,
                "registry": str(tiny_model.registry),
                "n_workers": 1,
                "processes": False,
                "batch_frames": 2,
            },
            timeout=180,
        )
        assert run.state is not None and run.state.is_completed(), run.state
        assert run.work_pool_name == "scopeflow-cloud"

        images = _image_artifacts(str(run.id))
    assert set(images) == {"reprocess-overlay", "reprocess-f1"}

    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium: scripts/install-browser.sh should have installed it")
        pytest.skip("no Chromium (run scripts/install-browser.sh)")
    with Browser(binary) as browser:
        browser.open(f"{settings.ui_url}/runs/flow-run/{run.id}")
        browser.wait_for_text(run.name, "reprocess-nightly", "Completed", "Artifacts")
        assert browser.click_text("Artifacts")
        browser.wait_for_text(
            "reprocess-summary",
            "reprocess-batches",
            "reprocess-overlay",
            "reprocess-f1",
            "reprocess-progress",
        )
        # The image artifact's page shows the PNG it carries.
        artifact_id, url = images["reprocess-overlay"]
        assert url.startswith("data:image/png;base64,")
        assert _image_width(browser, f"{settings.ui_url}/artifacts/artifact/{artifact_id}", url) == 500


def test_an_image_made_outside_up_stays_viewable(running: tuple[OpsSettings, State], tmp_path: Path) -> None:
    """A run made with embedded defaults (``make run``, no media server of ``up``): once its
    process is gone, the UI still shows its image artifact."""
    settings, _ = running
    script = (
        "from prefect import flow\n"
        "from flows.artifacts import publish_figure\n"
        "from tasks.reporting import f1_timeline\n"
        "@flow(name='figure-outside-up')\n"
        "def figure():\n"
        "    publish_figure('outside-up-f1', f1_timeline([15, 31], [0.9, 0.8], ['v1', 'v1']))\n"
        "print(figure(return_state=True).state_details.flow_run_id)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOPEFLOW_MEDIA")}
    env.update(
        PREFECT_API_URL=settings.prefect_api_url,
        SCOPEFLOW_HOME=str(tmp_path / "elsewhere"),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = done.stdout.strip().splitlines()[-1]
    images = _image_artifacts(run_id, settings.prefect_api_url)
    artifact_id, url = images["outside-up-f1"]
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium: scripts/install-browser.sh should have installed it")
        pytest.skip("no Chromium (run scripts/install-browser.sh)")
    with Browser(binary) as browser:
        assert _image_width(browser, f"{settings.ui_url}/artifacts/artifact/{artifact_id}", url) == 640


def _image_width(browser: Browser, page: str, src: str) -> int:
    """Natural width of the image ``src`` once the page has loaded it (0 if it never does)."""
    browser.open(page)
    browser.wait_for_text("Image URL")
    deadline = time.monotonic() + 30
    widths: list[int] = []
    while time.monotonic() < deadline and not any(widths):
        time.sleep(0.5)
        loaded = browser.evaluate("Array.from(document.images).map(i => [i.src, i.naturalWidth])") or []
        widths = [w for s, w in loaded if s == src]
    return max(widths, default=0)


def test_cron_deployments_get_scheduled_runs(running: tuple[OpsSettings, State]) -> None:
    """The server's scheduler service creates the future runs of the cron deployments (with
    SQLAlchemy 2.1 Prefect 3.8's scheduler failed every loop and created none)."""
    settings, state = running
    cron = {"sync", "reprocess-nightly"}
    assert cron <= set(state.deployments)
    # The scheduler visits recently applied deployments every 5 s and all of them every 60 s.
    deadline = time.monotonic() + 150
    scheduled: dict[str, int] = {}
    while time.monotonic() < deadline and not all(scheduled.get(name) for name in cron):
        scheduled = _scheduled_runs(settings, {n: state.deployments[n] for n in cron})
        time.sleep(1.0)
    assert all(scheduled.get(name) for name in cron), (scheduled, _log_tail(settings))


def _log_tail(settings: OpsSettings) -> str:
    log = settings.ops_dir / "logs" / "prefect-server.log"
    return log.read_text(errors="replace")[-1500:] if log.exists() else ""


def _scheduled_runs(settings: OpsSettings, deployments: dict[str, str]) -> dict[str, int]:
    """Runs in the Scheduled state per deployment name."""
    from prefect.client.schemas.objects import StateType

    return {
        name: len(flow_runs(deployment_id=i, states=[StateType.SCHEDULED], api_url=settings.prefect_api_url))
        for name, i in deployments.items()
    }


def test_down_stops_every_process_it_started(running: tuple[OpsSettings, State]) -> None:
    settings, state = running
    outcomes = down(settings, log=lambda _: None)
    assert [s.name for s, _ in outcomes] == [s.name for s in reversed(state.services)]
    # Under load a server may outlast SIGTERM's grace and be killed: still ended by `down`.
    ended = {"stopped", "killed (did not stop on SIGTERM)"}
    assert all(outcome in ended for _, outcome in outcomes), [(s.name, o) for s, o in outcomes]
    assert not any(s.alive() for s in state.services)
    assert not settings.state_file.exists()


def _image_artifacts(flow_run_id: str, api_url: str | None = None) -> dict[str, tuple[str, str]]:
    """Image artifacts of a flow run: key → (artifact id, image URL)."""
    found = artifacts(flow_run_id=flow_run_id, types=["image"], api_url=api_url)
    return {a.key: (str(a.id), str(a.data)) for a in found if a.key}
