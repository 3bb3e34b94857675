"""`m1 up`: the whole control plane on one machine, supervised by one process.

Children, each in its own session so a terminal's Ctrl-C reaches only this supervisor, which stops
them in order (runner, API, Prefect server) and then kills anything left in their process trees:
no orphan survives, and each child also gets SIGTERM if this process dies (PR_SET_PDEATHSIG).
Once up, a child that dies is restarted with backoff (deployments/restarts.py), with a log line and
an ``error_alerts`` event; one that keeps dying stops everything.

Configuration is resolved once, here: children get every ``M1_*`` variable as this process read it
(its environment and the ``.env`` of the directory `m1 up` ran from), with absolute paths, and run in
that same directory. The runner alone also gets a ``service`` credential made at each start
(``M1_API_KEY``, ``M1_API_URL``), so flow runs send their events and queries to the API; the previous
start's credential is revoked, and the key lives only in the runner's environment. This process never imports Prefect (that costs seconds and writes a Prefect
home): it only polls the server's health and the served deployments, where a busy answer means "not
yet". The runner, which imports Prefect anyway, makes the calls that change the server.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx
import psutil
from pydantic import SecretStr

from deployments.prefect_yaml import deployments_file, load_deployment_specs
from deployments.restarts import ChildRestarts, GiveUp, RestartPolicy
from m1lib import auth, bootstrap
from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.logs import configure_logging, register_secret
from m1lib.settings import Settings, child_environment, prefect_api_url_from_environment

if TYPE_CHECKING:
    from m1lib.metrics.pipeline import MetricsRuntime

logger = logging.getLogger("m1.up")
_PR_SET_PDEATHSIG = 1
RUNNER_CREDENTIAL = "m1-up-runner"  # names: m1-up-runner-<UTC start>-<random>, role service
ALERT_SOURCE = "m1-up"  # the source of the supervisor's error_alerts


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def prefect_environment(settings: Settings, api_url: str, *, local_server: bool) -> dict[str, str]:
    """What every child is told about Prefect; the server's retention comes from M1's settings."""
    retention_s = str(int(settings.prefect.retention.total_seconds()))
    extra = {
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": str(settings.prefect.runner_poll_s),
    }
    if local_server:
        extra.update(
            {
                "PREFECT_SERVER_API_HOST": settings.prefect.host,
                "PREFECT_SERVER_API_PORT": str(settings.prefect.port),
                "PREFECT_UI_API_URL": api_url,
                "PREFECT_UI_ENABLED": "true",
                "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
                "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": retention_s,
                "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"PT{retention_s}S",  # ISO 8601 duration
                "PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION": "120",
            }
        )
    return child_environment(settings, extra)


class Supervisor:
    """Starts, watches and stops the processes of `m1 up`."""

    def __init__(self, settings: Settings, *, serve: bool = True) -> None:
        self.settings = settings
        self.serve = serve
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.external_prefect = prefect_api_url_from_environment()
        self.prefect_api_url = self.external_prefect or settings.prefect_api_url
        self.local_prefect = serve and self.external_prefect is None
        self.env = (
            prefect_environment(settings, self.prefect_api_url, local_server=self.local_prefect)
            if serve
            else child_environment(settings, {})
        )
        self.deployments_file = deployments_file(settings)
        self.runner_started = datetime.now(UTC)
        self.runner_key: str | None = None  # made by prepare(); only the runner's environment
        self.clock: Callable[[], float] = time.monotonic
        self.policy = RestartPolicy.from_settings(settings)
        self.restarts: dict[str, ChildRestarts] = {}  # child name -> its restart history
        self.due: dict[str, float] = {}  # child name -> clock time its restart is due
        self.starters: dict[str, Callable[[], None]] = {
            "prefect-server": self.start_prefect_server,
            "api": self.start_api,
            "deployment-runner": self.start_runner,
        }
        self._alerts: MetricsRuntime | None = None  # built at the first alert

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        logger.info("starting %s", name)
        process = subprocess.Popen(
            argv,
            env=self.env if env is None else env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child = Child(name, process)
        for index, old in enumerate(self.children):
            if old.name == name:  # a restart keeps the child's place in the stopping order
                self.children[index] = child
                break
        else:
            self.children.append(child)
        now = self.clock()
        self.restarts.setdefault(name, ChildRestarts(name, self.policy, now)).started(now)
        return child

    def prepare(self) -> bootstrap.BootstrapResult:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        if self.serve:  # PREFECT_HOME of the server and the runner
            self.settings.prefect_home.mkdir(parents=True, exist_ok=True)
        db = Database(self.settings)
        try:
            revision = migrate.upgrade(db)
            logger.info("database at revision %s", revision)
            boot = bootstrap.ensure_embedded_secrets(self.settings, db)
            if self.serve:
                self.runner_key = rotate_runner_credential(db)
            return boot
        finally:
            db.dispose()

    def start_prefect_server(self) -> None:
        if not self.local_prefect:
            logger.info("using the Prefect server at %s", self.prefect_api_url)
            return
        self._spawn(
            "prefect-server",
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                self.settings.prefect.host,
                "--port",
                str(self.settings.prefect.port),
            ],
        )

    def _wait_until(
        self, ready: Callable[[], bool], failure: str, timeout_s: float, period_s: float = 0.3
    ) -> None:
        """Poll ``ready`` until it says yes; a child dying or the deadline passing ends the wait."""
        deadline = time.monotonic() + timeout_s
        while not self.stopping.is_set():
            self._check_children()
            try:
                if ready():
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(failure)
            time.sleep(period_s)

    def wait_for_prefect(self, timeout_s: float = 120) -> None:
        url = f"{self.prefect_api_url}/health"
        self._wait_until(
            lambda: httpx.get(url, timeout=2).status_code == 200,
            f"the Prefect server did not answer at {self.prefect_api_url}",
            timeout_s,
        )

    def start_runner(self) -> None:
        self.runner_started = datetime.now(UTC)
        self._spawn(
            "deployment-runner",
            [
                sys.executable,
                "-m",
                "deployments.serve",
                "--file",
                str(self.deployments_file),
            ],
            env=self.runner_environment(),
        )

    def runner_environment(self) -> dict[str, str]:
        """The children's environment plus, for flow runs, the API and this start's key."""
        env = dict(self.env)
        if self.runner_key is not None:
            env["M1_API_KEY"] = self.runner_key
            env["M1_API_URL"] = self.settings.api_base_url
        return env

    def wait_for_deployments(self, timeout_s: float = 120) -> None:
        """`m1 up` is up once our runner polls every deployment: after a crash they are all still
        registered, by the runner that died, so being listed is not being served."""
        wanted = {spec.name for spec in load_deployment_specs(self.deployments_file)}

        def all_served() -> bool:
            found = httpx.post(
                f"{self.prefect_api_url}/deployments/filter",
                json={"deployments": {"name": {"any_": sorted(wanted)}}},
                timeout=5,
            )
            return found.status_code == 200 and wanted <= {
                d["name"] for d in found.json() if _polled_since(d, self.runner_started)
            }

        self._wait_until(
            all_served, f"the runner did not serve all of {sorted(wanted)} in time", timeout_s
        )

    def start_api(self) -> None:
        self._spawn("api", [sys.executable, "-m", "m1lib.api"])

    def wait_for_api(self, timeout_s: float = 60) -> None:
        url = f"{self.settings.api_base_url}/health/live"
        self._wait_until(
            lambda: httpx.get(url, timeout=2, verify=False).status_code == 200,  # noqa: S501 - own cert
            f"the M1 API did not answer at {url}",
            timeout_s,
            period_s=0.2,
        )

    def _check_children(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None and not self.stopping.is_set():
                raise ChildExited(f"{child.name} exited with code {code}")

    def _watch_children(self) -> None:
        """Once up: restart a child that died after its backoff, or raise ChildExited when it
        has died too often (restarts.py). Restarts are due times, so the others stay watched."""
        now = self.clock()
        for child in list(self.children):
            code = child.process.poll()
            if code is None or child.name in self.due or self.stopping.is_set():
                continue
            _end_orphans(child)  # its grandchildren would keep ports and runs of the dead one
            history = self.restarts[child.name]
            previous = history.last_restart_at
            decision = history.died(now)
            exited = f"{child.name} (pid {child.process.pid}) exited with {_exit_text(code)}"
            facts: dict[str, Any] = {
                "child": child.name,
                "exitCode": code,
                "restarts": history.total,
                "lastRestart": None if previous is None else _wall(previous, now),
            }
            if isinstance(decision, GiveUp):
                message = f"{exited}; {decision.reason}: giving up, stopping everything"
                self._alert("critical", message, facts)
                raise ChildExited(message)
            self.due[child.name] = now + decision.delay_s
            message = (
                f"{exited}; restarting it in {decision.delay_s:g} s (attempt {decision.attempt}, "
                f"{decision.in_window} of at most {self.policy.max_restarts} restarts within "
                f"{self.policy.window_s:g} s)"
            )
            logger.error("%s", message)
            self._alert(
                "warning",
                message,
                {**facts, "attempt": decision.attempt, "delayS": decision.delay_s},
            )
        for name, due in list(self.due.items()):
            if now < due or self.stopping.is_set():
                continue
            if name == "deployment-runner" and self.local_prefect and not self._prefect_answers():
                self.due[name] = now + 1.0  # the runner needs the server: wait for its restart
                continue
            del self.due[name]
            self.starters[name]()
            restarted = next(child for child in self.children if child.name == name)
            logger.info(
                "restarted %s (pid %s; %d restarts since m1 up started)",
                name,
                restarted.process.pid,
                self.restarts[name].total,
            )

    def _prefect_answers(self) -> bool:
        try:
            return httpx.get(f"{self.prefect_api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _alert(
        self, level: Literal["warning", "critical"], message: str, facts: Mapping[str, Any]
    ) -> None:
        """An ``error_alerts`` event for the dashboard; never stops the supervision."""
        if self._alerts is None and self.settings.redis_url is None and self._alert_key() is None:
            return  # nowhere to send it (--no-serve, no Redis, no M1_API_KEY): the log line stays
        try:
            if self._alerts is None:
                self._alerts = self._alert_runtime()
            from m1lib.alerts import raise_alert

            raise_alert(level, ALERT_SOURCE, message, metadata=facts)
        except Exception:  # an alert that cannot be raised must not stop a restart
            logger.exception("could not raise the alert")

    def _alert_runtime(self) -> MetricsRuntime:
        """This process's events forwarded like a flow run's: through Redis when configured,
        else to the API with the runner's key (a dead API gets them once it is back)."""
        from m1lib.metrics.pipeline import MetricsRuntime, install_default

        settings = self.settings
        if settings.redis_url is None and self.runner_key is not None:
            api = settings.api.model_copy(
                update={"key": SecretStr(self.runner_key), "url": settings.api_base_url}
            )
            settings = settings.model_copy(update={"api": api})
        runtime = MetricsRuntime(settings, forwarding=True)
        runtime.start()
        install_default(runtime)
        return runtime

    def _alert_key(self) -> str | None:
        if self.runner_key is not None:
            return self.runner_key
        key = self.settings.api.key
        return None if key is None else key.get_secret_value()

    def stop(self, timeout_s: float = 15) -> None:
        """Stop in reverse order, politely then by force, including every grandchild."""
        self.stopping.set()
        if self._alerts is not None:  # its last alerts go out while the API still answers
            self._alerts.close()
            self._alerts = None
        for child in reversed(self.children):
            tree = child.tree()
            for process in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGTERM)
            _, alive = psutil.wait_procs(tree, timeout=timeout_s / max(1, len(self.children)))
            for process in alive:
                logger.warning(
                    "killing %s (pid %s) after the grace period", child.name, process.pid
                )
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            psutil.wait_procs(alive, timeout=5)
            try:
                child.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.process.kill()
        self.children.clear()

    def banner(self, boot: bootstrap.BootstrapResult) -> str:
        lines = ["", "M1 control plane is up:"]
        if self.local_prefect:
            lines.append(
                f"  Prefect UI     http://{self.settings.prefect.host}:{self.settings.prefect.port}"
            )
        if self.serve:
            lines.append(f"  Prefect API    {self.prefect_api_url}")
            lines.append(f"  deployments    {self.deployments_file}")
        lines.append(
            f"  M1 API         {self.settings.api_base_url}   (docs: /docs, ready: /health/ready)"
        )
        lines.append(
            f"  dashboard      {self.settings.api_base_url}/dashboard   (log in with a key)"
        )
        if not self.serve:
            lines.append(
                "  deployments    not served here, no Prefect server (--no-serve): "
                "workers of pool m1-pool run them"
            )
        if boot.admin_key is not None:
            lines += [
                "",
                "  Admin API key (shown once; also stored with mode 0600 in "
                f"{boot.admin_key_path}):",
                f"    {boot.admin_key}",
            ]
        lines.append("")
        return "\n".join(lines)

    def run(self) -> int:
        """Start everything, then wait for a signal or a child's death; returns the exit code."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.stopping.set())
        try:
            boot = self.prepare()
            if self.serve:
                self.start_prefect_server()
            self.start_api()  # needs no Prefect: it starts while the Prefect server boots
            if self.serve:
                self.wait_for_prefect()
                self.start_runner()
            self.wait_for_api()
            if self.serve:
                self.wait_for_deployments()
            print(self.banner(boot), flush=True)
            while not self.stopping.wait(0.5):
                self._watch_children()
            logger.info("stopping")
            return 0
        except ChildExited as error:
            logger.error("%s; stopping everything", error)
            return 1
        except RuntimeError as error:
            logger.error("%s", error)
            return 1
        finally:
            self.stop()


def rotate_runner_credential(db: Database) -> str:
    """Revoke the runner credentials of earlier starts and make this start's; returns its key.

    A key is known only when it is made, and a name is never reused (audits stay unambiguous),
    so each start makes a new ``m1-up-runner-...`` credential of role ``service``.
    """
    for row in auth.list_credentials(db):
        if row.name.startswith(RUNNER_CREDENTIAL + "-") and row.revoked_at is None:
            auth.revoke_credential(db, row.name)
    name = f"{RUNNER_CREDENTIAL}-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
    key = auth.create_credential(db, name, auth.Role.SERVICE, created_by="m1 up")
    register_secret(key)  # masked should it ever reach a log line
    logger.info("flow runs record and query with credential %s (role service)", name)
    return key


def _polled_since(deployment: dict[str, object], since: datetime) -> bool:
    polled = deployment.get("last_polled")
    return isinstance(polled, str) and datetime.fromisoformat(polled) >= since


class ChildExited(RuntimeError):
    """A supervised process ended on its own while starting, or died once too often after: `m1 up`
    stops the rest so a process manager restarts it."""


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"code {code} ({signal.Signals(-code).name})"
    return f"code {code}"


def _wall(clock_at: float, clock_now: float) -> str:
    """A time of the supervisor's monotonic clock as UTC ISO text."""
    at = time.time() - (clock_now - clock_at)
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _end_orphans(child: Child, grace_s: float = 5) -> None:
    """End what is left of a dead child's process group (it led its own session): a runner's
    flow runs, a server's workers. They lost their parent; left alone they hold its port."""
    group = child.process.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return  # nothing left
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    logger.warning("killing what is left of %s's processes after the grace period", child.name)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def up(settings: Settings, *, serve: bool = True) -> int:
    configure_logging(settings)
    return Supervisor(settings, serve=serve).run()
