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
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import yaml

from scopeflow.config import home
from scopeflow.errors import InputError, NotFoundError, ServiceError

#: The repository root: deployments' entrypoints and the workers' working directory.
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "deployments" / "prefect.yaml"
STATE_VERSION = 1
DATABASE_ENV = "SCOPEFLOW_PREFECT_DATABASE_URL"
LOG_TAIL = 2000  # characters of a dead process's log shown in its error

Log = Callable[[str], None]
_STARTED: list[subprocess.Popen[bytes]] = []


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
class Service:
    """A process ``up`` started: its pid and start time (psutil's, seconds since the epoch)."""

    name: str
    pid: int
    create_time: float
    cmd: list[str]
    log: str
    url: str = ""

    def process(self) -> psutil.Process | None:
        """The live process, or None when it exited or its pid now belongs to another process."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.05 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    def alive(self) -> bool:
        return self.process() is not None


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


# ---------------------------------------------------------------------------------- ports
def port_owner(host: str, port: int) -> str:
    """Which process listens on ``port`` (pid and name), as far as this user may see."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return "another user's process"
                with contextlib.suppress(psutil.Error):
                    return f"pid {conn.pid} ({' '.join(psutil.Process(conn.pid).cmdline()[:4])})"
                return f"pid {conn.pid}"
    return "an unknown process"


def check_port(host: str, port: int, what: str, flag: str) -> None:
    """Raise a ``ServiceError`` naming the owner when ``host:port`` cannot be bound."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise ServiceError(
                f"port {port} on {host} (the {what}) is taken by {port_owner(host, port)}: "
                f"stop it, or choose another with {flag}"
            ) from None


# ---------------------------------------------------------------------------------- processes
def _log_tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-LOG_TAIL:]
    return ""


def spawn(name: str, cmd: list[str], env: Mapping[str, str], log: Path, url: str = "") -> Service:
    """Start ``cmd`` in its own session (so ``stop`` can end it with its children), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        created = 0.0
    # The process outlives this one (``down`` ends it by pid); the handle is only kept alive.
    _STARTED.append(proc)
    return Service(name, proc.pid, created, cmd, str(log), url)


def wait_until(service: Service, ready: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``ready`` until true; a ``ServiceError`` with the log's tail if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not service.alive():
            raise ServiceError(
                f"{service.name} (pid {service.pid}) exited during start-up; "
                f"last lines of {service.log}:\n{_log_tail(Path(service.log))}"
            )
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.25)
    raise ServiceError(
        f"{service.name} (pid {service.pid}) not ready after {timeout_s:.0f} s; see {service.log}"
    )


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness probe: ``GET url`` answers 200."""
    import httpx

    return lambda: httpx.get(url, timeout=2.0).status_code == 200


def stop(service: Service, timeout_s: float = 15.0) -> str:
    """End ``service``'s process group (SIGTERM, then SIGKILL); says what happened."""
    proc = service.process()
    if proc is None:
        return "had already exited"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
        outcome = "stopped"
    except psutil.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.TimeoutExpired):
            proc.wait(5)
        outcome = "killed (did not stop on SIGTERM)"
    # Children left in the group (a worker's flow-run processes) go with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(service.pid, signal.SIGKILL)
    return outcome


# ---------------------------------------------------------------------------------- deployments
def _schedule(config: Mapping[str, Any]) -> Any:
    """A ``DeploymentScheduleCreate`` from a prefect.yaml schedule (cron, interval or rrule)."""
    from datetime import timedelta

    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    tz = config.get("timezone")
    if "cron" in config:
        schedule: Any = CronSchedule(cron=config["cron"], **({"timezone": tz} if tz else {}))
    elif "interval" in config:
        interval = config["interval"]
        interval = timedelta(seconds=interval) if isinstance(interval, int | float) else interval
        schedule = IntervalSchedule(interval=interval, **({"timezone": tz} if tz else {}))
    elif "rrule" in config:
        schedule = RRuleSchedule(rrule=config["rrule"], **({"timezone": tz} if tz else {}))
    else:
        raise InputError(f"schedule {dict(config)} has none of cron, interval, rrule")
    return DeploymentScheduleCreate(schedule=schedule, active=bool(config.get("active", True)))


def load_spec(path: Path = DEFAULT_SPEC) -> dict[str, Any]:
    """The deployments file, anchors resolved."""
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise NotFoundError(f"no deployments file at {path}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("deployments"), list):
        raise InputError(f"{path} has no 'deployments:' list")
    return spec


def pool_names(spec: Mapping[str, Any]) -> list[str]:
    """Work pools the spec's deployments use, in order of first use."""
    return list(dict.fromkeys(d["work_pool"]["name"] for d in spec["deployments"] if d.get("work_pool")))


async def ensure_pools(names: list[str]) -> list[str]:
    """Create the missing pools as process pools; returns those created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    created = []
    async with get_client() as client:
        for name in names:
            try:
                await client.read_work_pool(name)
            except ObjectNotFound:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type="process",
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                    )
                )
                created.append(name)
    return created


def _load_flow(entrypoint: str, root: Path, fallback: Callable[[str], Any]) -> Any:
    """The flow an entrypoint ``flows/x.py:fn`` names: imported as the package module ``flows.x``
    when it is one of ours (already imported modules are reused), else loaded from the file."""
    import importlib

    path, _, name = entrypoint.partition(":")
    if path.endswith(".py") and (root / path).resolve().is_relative_to(ROOT):
        module = ".".join(Path(path).with_suffix("").parts)
        with contextlib.suppress(ImportError):
            return getattr(importlib.import_module(module), name)
    return fallback(str(root / entrypoint))


async def apply_deployments(spec_path: Path = DEFAULT_SPEC, root: Path = ROOT) -> dict[str, UUID]:
    """Apply every deployment of ``spec_path`` to the current Prefect API (``PREFECT_API_URL``).

    What ``prefect deploy --all`` does for this file, without prompts: pools created as process
    pools, each deployment upserted with its parameters, schedules and a pull step that sets
    the working directory to ``root``; its triggers replace the automations it owned.
    """
    from prefect.client.orchestration import get_client
    from prefect.events import DeploymentTriggerTypes
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from pydantic import TypeAdapter

    spec = load_spec(spec_path)
    await ensure_pools(pool_names(spec))
    triggers_of = TypeAdapter(DeploymentTriggerTypes)
    ids: dict[str, UUID] = {}
    async with get_client() as client:
        for dep in spec["deployments"]:
            name = dep["name"]
            flow = _load_flow(dep["entrypoint"], root, load_flow_from_entrypoint)
            pool = dep.get("work_pool") or {}
            flow_id = await client.create_flow_from_name(flow.name)
            deployment_id = await client.create_deployment(
                flow_id=flow_id,
                name=name,
                entrypoint=dep["entrypoint"],
                path=str(root),
                pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(root)}}],
                work_pool_name=pool.get("name"),
                work_queue_name=pool.get("work_queue_name"),
                job_variables=pool.get("job_variables") or {},
                parameters=dep.get("parameters") or {},
                parameter_openapi_schema=parameter_schema(flow).model_dump_for_openapi(),
                schedules=[_schedule(s) for s in dep.get("schedules") or []],
                description=dep.get("description") or flow.description,
                tags=dep.get("tags") or [],
                version=dep.get("version"),
            )
            # Triggers belong to the deployment: replace the automations an earlier apply made.
            with contextlib.suppress(Exception):
                await client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
            for i, raw in enumerate(dep.get("triggers") or [], start=1):
                trigger = triggers_of.validate_python({"name": f"{name}__automation_{i}", **raw})
                trigger.set_deployment_id(deployment_id)
                await client.create_automation(trigger.as_automation())
            ids[name] = deployment_id
    return ids


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
    previous = running_state(settings)
    if previous is not None:
        alive = [f"{s.name} (pid {s.pid})" for s in previous.services if s.alive()]
        if alive:
            raise ServiceError(
                f"scopeflow is already up from {settings.home}: {', '.join(alive)}; run `scopeflow down` first"
            )
        log(f"replacing a stale state file (nothing in it runs): {settings.state_file}")
    for port, what, flag in (
        (settings.prefect_port, "Prefect server", "--prefect-port"),
        (settings.store_port, "store server", "--store-port"),
        (settings.media_port, "media server", "--media-port"),
    ):
        check_port(settings.host, port, what, flag)
    if len({settings.prefect_port, settings.store_port, settings.media_port}) < 3:
        raise InputError("the Prefect, store and media ports must differ")

    logs = settings.ops_dir / "logs"
    (settings.home / "prefect").mkdir(parents=True, exist_ok=True)
    state = State(
        home=str(settings.home),
        started=dt.datetime.now(dt.UTC).isoformat(),
        env=settings.client_env(),
        ui_url=settings.ui_url,
    )
    py = sys.executable

    def start(name: str, cmd: list[str], env: Mapping[str, str], url: str = "") -> Service:
        service = spawn(name, cmd, env, logs / f"{name}.log", url)
        state.services.append(service)
        state.save(settings.state_file)  # recorded before waiting: `down` can end it whatever happens
        log(f"started {name} (pid {service.pid})")
        return service

    host = ["--host", settings.host]
    try:
        from storage.federation.embedded import init_store

        init_store(settings.home / "store")  # the token file, before any worker reads it
        # The three servers start side by side (the Prefect server is the slow one: migrations).
        servers = [
            (
                start(
                    "prefect-server",
                    [py, "-m", "prefect", "server", "start", *host, "--port", str(settings.prefect_port)],
                    {
                        **_prefect_env(settings),
                        "PREFECT_API_DATABASE_CONNECTION_URL": settings.prefect_database_url(),
                        "PREFECT_UI_API_URL": settings.prefect_api_url,
                    },
                    settings.ui_url,
                ),
                http_ok(f"{settings.prefect_api_url}/health"),
            ),
            (
                start(
                    "store-server",
                    [
                        py,
                        "-m",
                        "storage.federation",
                        "serve",
                        "--dir",
                        str(settings.home / "store"),
                        *host,
                        "--port",
                        str(settings.store_port),
                    ],
                    {"SCOPEFLOW_HOME": str(settings.home)},
                    settings.store_url,
                ),
                http_ok(f"{settings.store_url}/api/health"),
            ),
            (
                start(
                    "media-server",
                    [
                        py,
                        "-m",
                        "storage.media",
                        "--dir",
                        str(settings.home / "media"),
                        *host,
                        "--port",
                        str(settings.media_port),
                    ],
                    {},
                    settings.media_url,
                ),
                http_ok(f"http://{settings.host}:{settings.media_port}/health"),
            ),
        ]
        for service, ready in servers:
            wait_until(service, ready, settings.timeout_s)
        spec = load_spec(settings.spec)
        pools = [p for p in pool_names(spec) if settings.worker_pools is None or p in settings.worker_pools]
        with _with_api(settings):
            asyncio.run(ensure_pools(pool_names(spec)))
        # Workers start while the deployments are applied (both take seconds of imports).
        workers = [
            (
                start(
                    f"worker-{pool}",
                    [
                        py,
                        "-m",
                        "prefect",
                        "worker",
                        "start",
                        "--pool",
                        pool,
                        "--type",
                        "process",
                        "--name",
                        f"{pool}-{socket.gethostname()}",
                    ],
                    {
                        **_prefect_env(settings),
                        **settings.client_env(),
                        "PREFECT_WORKER_QUERY_SECONDS": str(settings.worker_poll_s),
                    },
                ),
                _worker_registered(settings, pool),
            )
            for pool in (pools if settings.workers else [])
        ]
        with _with_api(settings):
            deployments = asyncio.run(apply_deployments(settings.spec))
        state.deployments = {k: str(v) for k, v in deployments.items()}
        state.save(settings.state_file)
        log(f"applied {len(deployments)} deployments: {', '.join(deployments)}")
        for service, ready in workers:
            wait_until(service, ready, settings.timeout_s)
    except BaseException:
        # Half a setup is worse than none: end what this call started, then report.
        for service in reversed(state.services):
            stop(service)
        settings.state_file.unlink(missing_ok=True)
        raise
    return state


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
