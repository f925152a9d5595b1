"""The whole edge-to-cloud setup on one machine: ``scopeflow up`` / ``scopeflow down``.

``up`` starts, each as its own process group, and records in ``$SCOPEFLOW_HOME/ops/state.json``:

1. a Prefect server (UI and API) on loopback; its database is SQLite under
   ``$SCOPEFLOW_HOME/prefect`` unless ``$SCOPEFLOW_PREFECT_DATABASE_URL`` names another
   (``postgresql+asyncpg://user:pass@host/db``);
2. the federated store server (``python -m storage.federation serve``);
3. the media server for image artifacts (``python -m storage.media``);

then creates the work pools (process type), applies the deployments of
``deployments/prefect.yaml`` (schedules and triggers included) and starts one process worker
per pool. ``down`` stops exactly the processes the state file names — by process id, after
checking each one's start time so a recycled pid is never signalled — and removes the file.

Every step fails with a ``ServiceError`` that says what to do: a port already taken (and by
which process), a process that exited during start-up (with the tail of its log).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flows.deploy import DEFAULT_SPEC, apply_deployments, ensure_pools, load_spec, pool_names
from flows.processes import Service, check_port, http_ok, spawn, stop, wait_until
from scopeflow.config import home
from scopeflow.errors import InputError, NotFoundError, ServiceError

__all__ = ["OpsSettings", "State", "down", "status", "up"]

STATE_VERSION = 1
DATABASE_ENV = "SCOPEFLOW_PREFECT_DATABASE_URL"

Log = Callable[[str], None]
Starting = list[tuple[Service, Callable[[], bool]]]  # started services and their readiness probes


# ---------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class OpsSettings:
    """Where ``up`` puts things: ``home`` (default ``$SCOPEFLOW_HOME``), loopback ports, the spec."""

    home: Path = field(default_factory=home)
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    store_port: int = 8765
    media_port: int = 8766
    spec: Path = DEFAULT_SPEC
    database_url: str | None = field(default_factory=lambda: os.environ.get(DATABASE_ENV) or None)
    workers: bool = True
    worker_pools: tuple[str, ...] | None = None  # pools to start workers for (None: all the spec uses)
    worker_poll_s: float = 5.0  # how often a worker asks for scheduled runs (Prefect's default: 10 s)
    timeout_s: float = 120.0  # per service start-up (the Prefect server migrates its database first)

    @property
    def ops_dir(self) -> Path:
        return self.home / "ops"

    @property
    def state_file(self) -> Path:
        return self.ops_dir / "state.json"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def store_url(self) -> str:
        return f"http://{self.host}:{self.store_port}"

    @property
    def media_url(self) -> str:
        return f"http://{self.host}:{self.media_port}/media"

    def prefect_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.home / 'prefect' / 'prefect.db'}"

    def client_env(self) -> dict[str, str]:
        """What a process needs to reach the services ``up`` started (workers, the user's shell)."""
        return {
            "SCOPEFLOW_HOME": str(self.home),
            "PREFECT_API_URL": self.prefect_api_url,
            "SCOPEFLOW_STORE_URL": self.store_url,
            "SCOPEFLOW_MEDIA_URL": self.media_url,
            "SCOPEFLOW_MEDIA_DIR": str(self.home / "media"),
        }


# ---------------------------------------------------------------------------------- state
@dataclass
class State:
    """The state file: settings used, services started, deployments applied."""

    home: str
    started: str
    env: dict[str, str]
    ui_url: str
    services: list[Service] = field(default_factory=list)
    deployments: dict[str, str] = field(default_factory=dict)
    version: int = STATE_VERSION

    def save(self, path: Path) -> None:
        """Write atomically (a crash mid-``up`` leaves a readable file naming what runs)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise NotFoundError(f"nothing was started from {path.parent.parent} (no {path})") from exc
        except ValueError as exc:
            raise InputError(f"unreadable state file {path}: {exc}") from exc
        if data.get("version") != STATE_VERSION:
            raise InputError(f"state file {path} has version {data.get('version')}, expected {STATE_VERSION}")
        data["services"] = [Service(**s) for s in data.get("services", [])]
        return cls(**data)


# ---------------------------------------------------------------------------------- up / down
def _prefect_env(settings: OpsSettings) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(settings.home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def _with_api(settings: OpsSettings) -> contextlib.AbstractContextManager[Any]:
    """Point this process's Prefect client at the server ``up`` started."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: settings.prefect_api_url})


def _worker_registered(settings: OpsSettings, pool: str) -> Callable[[], bool]:
    from prefect.client.orchestration import get_client

    async def check() -> bool:
        async with get_client() as client:
            return bool(await client.read_workers_for_work_pool(pool))

    def ready() -> bool:
        with _with_api(settings):
            return asyncio.run(check())

    return ready


def running_state(settings: OpsSettings) -> State | None:
    """The state file's contents when one exists."""
    return State.load(settings.state_file) if settings.state_file.exists() else None


def up(settings: OpsSettings | None = None, log: Log = print) -> State:
    """Start the Prefect server, store, media server; pools, deployments, workers. See the module doc."""
    settings = settings or OpsSettings()
    _check_nothing_runs(settings, log)
    _check_ports(settings)
    (settings.home / "prefect").mkdir(parents=True, exist_ok=True)
    state = State(
        home=str(settings.home),
        started=dt.datetime.now(dt.UTC).isoformat(),
        env=settings.client_env(),
        ui_url=settings.ui_url,
    )
    launch = _Launcher(settings, state, log)
    try:
        from storage.federation.embedded import init_store

        init_store(settings.home / "store")  # the token file, before any worker reads it
        # The three servers start side by side (the Prefect server is the slow one: migrations).
        _wait_all(_start_servers(launch), settings)
        spec = load_spec(settings.spec)
        with _with_api(settings):
            asyncio.run(ensure_pools(pool_names(spec)))
        # Workers start while the deployments are applied (both take seconds of imports).
        workers = _start_workers(launch, pool_names(spec))
        _apply_deployments(settings, state, log)
        _wait_all(workers, settings)
    except BaseException:
        # Half a setup is worse than none: end what this call started, then report.
        for service in reversed(state.services):
            stop(service)
        settings.state_file.unlink(missing_ok=True)
        raise
    return state


def _check_nothing_runs(settings: OpsSettings, log: Log) -> None:
    """Refuse to start over a running setup; a state file naming only dead processes is replaced."""
    previous = running_state(settings)
    if previous is None:
        return
    alive = [f"{s.name} (pid {s.pid})" for s in previous.services if s.alive()]
    if alive:
        raise ServiceError(
            f"scopeflow is already up from {settings.home}: {', '.join(alive)}; run `scopeflow down` first"
        )
    log(f"replacing a stale state file (nothing in it runs): {settings.state_file}")


def _check_ports(settings: OpsSettings) -> None:
    """Every port free and the three different, before anything starts."""
    for port, what, flag in (
        (settings.prefect_port, "Prefect server", "--prefect-port"),
        (settings.store_port, "store server", "--store-port"),
        (settings.media_port, "media server", "--media-port"),
    ):
        check_port(settings.host, port, what, flag)
    if len({settings.prefect_port, settings.store_port, settings.media_port}) < 3:
        raise InputError("the Prefect, store and media ports must differ")


@dataclass
class _Launcher:
    """Starts ``up``'s services and records each in the state file before waiting for it, so
    that ``down`` can end it whatever happens next."""

    settings: OpsSettings
    state: State
    log: Log

    def start(self, name: str, cmd: list[str], env: Mapping[str, str], url: str = "") -> Service:
        service = spawn(name, cmd, env, self.settings.ops_dir / "logs" / f"{name}.log", url)
        self.state.services.append(service)
        self.state.save(self.settings.state_file)
        self.log(f"started {name} (pid {service.pid})")
        return service


def _start_servers(launch: _Launcher) -> Starting:
    """The Prefect, store and media servers, with the health check each answers when ready."""
    settings = launch.settings
    py, host = sys.executable, ["--host", settings.host]
    prefect_env = {
        **_prefect_env(settings),
        "PREFECT_API_DATABASE_CONNECTION_URL": settings.prefect_database_url(),
        "PREFECT_UI_API_URL": settings.prefect_api_url,
    }
    prefect_cmd = [py, "-m", "prefect", "server", "start", *host, "--port", str(settings.prefect_port)]
    store_dir, media_dir = str(settings.home / "store"), str(settings.home / "media")
    store_cmd = [
        py,
        "-m",
        "storage.federation",
        "serve",
        "--dir",
        store_dir,
        *host,
        "--port",
        str(settings.store_port),
    ]
    media_cmd = [py, "-m", "storage.media", "--dir", media_dir, *host, "--port", str(settings.media_port)]
    return [
        (
            launch.start("prefect-server", prefect_cmd, prefect_env, settings.ui_url),
            http_ok(f"{settings.prefect_api_url}/health"),
        ),
        (
            launch.start(
                "store-server", store_cmd, {"SCOPEFLOW_HOME": str(settings.home)}, settings.store_url
            ),
            http_ok(f"{settings.store_url}/api/health"),
        ),
        (
            launch.start("media-server", media_cmd, {}, settings.media_url),
            http_ok(f"http://{settings.host}:{settings.media_port}/health"),
        ),
    ]


def _start_workers(launch: _Launcher, pools: list[str]) -> Starting:
    """One process worker per pool (those of ``settings.worker_pools``), ready once registered."""
    settings = launch.settings
    if not settings.workers:
        return []
    env = {
        **_prefect_env(settings),
        **settings.client_env(),
        "PREFECT_WORKER_QUERY_SECONDS": str(settings.worker_poll_s),
    }
    started = []
    for pool in pools:
        if settings.worker_pools is not None and pool not in settings.worker_pools:
            continue
        cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
        cmd += ["--name", f"{pool}-{socket.gethostname()}"]
        started.append((launch.start(f"worker-{pool}", cmd, env), _worker_registered(settings, pool)))
    return started


def _apply_deployments(settings: OpsSettings, state: State, log: Log) -> None:
    """The spec's deployments on the new server, their ids recorded in the state file."""
    with _with_api(settings):
        deployments = asyncio.run(apply_deployments(settings.spec))
    state.deployments = {k: str(v) for k, v in deployments.items()}
    state.save(settings.state_file)
    log(f"applied {len(deployments)} deployments: {', '.join(deployments)}")


def _wait_all(services: Starting, settings: OpsSettings) -> None:
    for service, ready in services:
        wait_until(service, ready, settings.timeout_s)


def down(settings: OpsSettings | None = None, log: Log = print) -> list[tuple[Service, str]]:
    """Stop what ``up`` started (by pid, newest first) and remove the state file."""
    settings = settings or OpsSettings()
    state = State.load(settings.state_file)
    outcomes = []
    for service in reversed(state.services):
        outcome = stop(service)
        log(f"{service.name} (pid {service.pid}): {outcome}")
        outcomes.append((service, outcome))
    settings.state_file.unlink(missing_ok=True)
    return outcomes


def status(settings: OpsSettings | None = None) -> list[tuple[Service, bool]]:
    """The services of the state file and whether each still runs."""
    settings = settings or OpsSettings()
    state = State.load(settings.state_file)
    return [(s, s.alive()) for s in state.services]
