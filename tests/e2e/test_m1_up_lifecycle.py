"""`m1 up` from install to crash, as a user runs it: M1 built as a wheel and installed into a fresh
venv, run from an empty directory on its embedded defaults (SQLite and secrets under ``./.m1``).

It serves every deployment and the dashboard from the installed package; killed, it starts again and frees the runs
its dead runner abandoned; stopped, it leaves no orphan. The tests share one installation and one
`m1 up` (starting one costs tens of seconds) and run in this order.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from prefect.states import Running

from m1lib.api.routes.page import STATIC_DIR
from tests.e2e import prefect_api
from tests.e2e.live import LiveM1
from tests.e2e.wheel import PACKAGES, InstalledM1, build_wheel, install_in_fresh_venv
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> InstalledM1:
    workdir = tmp_path_factory.mktemp("wheel")
    return install_in_fresh_venv(build_wheel(workdir), workdir / "venv")


@pytest.fixture(scope="module")
def installed_m1(
    installed: InstalledM1, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveM1]:
    live = LiveM1(
        workdir=tmp_path_factory.mktemp("installed") / "empty", dotenv=False, m1=[str(installed.m1)]
    )
    try:
        live.start()
        yield live
    finally:
        live.kill_everything_left()


def test_the_venv_imports_m1_from_the_wheel_not_the_checkout(
    installed: InstalledM1, installed_m1: LiveM1
) -> None:
    probe = (
        "import importlib.util, json, sys; "
        "print(json.dumps({n: importlib.util.find_spec(n).origin for n in sys.argv[1:]}))"
    )
    found = subprocess.run(
        [str(installed.python), "-c", probe, *PACKAGES, "prefect"],
        cwd=installed_m1.workdir,
        env=installed_m1.environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    files = json.loads(found.stdout)
    for package in PACKAGES:
        assert files[package].startswith(str(installed.site_packages)), files
    assert (installed.site_packages / "deployments" / "prefect.yaml").exists()
    assert not files["prefect"].startswith(str(installed.venv)), files  # a dependency, not copied


def test_the_wheel_ships_and_serves_the_dashboard(
    installed: InstalledM1, installed_m1: LiveM1
) -> None:
    shipped = installed.site_packages / "m1lib" / "api" / "static"
    for path in sorted(p for p in STATIC_DIR.rglob("*") if p.is_file()):
        name = path.relative_to(STATIC_DIR)
        assert (shipped / name).read_bytes() == path.read_bytes(), f"{name} is not in the wheel"
    api = installed_m1.api_url
    script = httpx.get(f"{api}/dashboard/assets/dashboard/dashboard.js", timeout=30)
    assert script.status_code == 200
    assert script.content == (STATIC_DIR / "dashboard" / "dashboard.js").read_bytes()
    key = installed_m1.admin_key()
    assert key is not None
    with httpx.Client(base_url=api, timeout=30) as browser:
        assert browser.get("/dashboard").headers["location"] == "/dashboard/login"
        assert browser.post("/api/m1/session", json={"key": key}).status_code == 200
        page = browser.get("/dashboard")
        assert page.status_code == 200
        assert 'id="conn"' in page.text


def test_m1_up_from_the_wheel_in_an_empty_directory_serves_every_deployment(
    installed: InstalledM1, installed_m1: LiveM1
) -> None:
    served = {d.name: d for d in installed_m1.deployments()}
    assert set(served) >= {"database-setup", "purge-tokens", "compact-timeseries"}
    assert str(installed.site_packages / "deployments" / "prefect.yaml") in installed_m1.output()
    deployment = served["database-setup"]
    run_id = prefect_api.run_deployment(installed_m1.prefect_api_url, deployment.id)
    run = prefect_api.wait_for_final_state(installed_m1.prefect_api_url, run_id)
    assert run.state is not None
    assert run.state.is_completed(), run.state
    (artifact,) = prefect_api.artifacts_of(installed_m1.prefect_api_url, run_id)
    # The flow run, a grandchild started from the package, used the one SQLite file of ./.m1.
    assert str(installed_m1.data_dir / "m1.db") in (artifact.description or "")


def test_crash_then_restart_marks_abandoned_runs_crashed_and_sigterm_leaves_no_orphan(
    installed_m1: LiveM1,
) -> None:
    live = installed_m1
    api = live.prefect_api_url
    deployment = prefect_api.deployment_by_name(api, "database-setup")
    # A run that a runner had picked up when it died: left Running forever.
    run_id = prefect_api.schedule_deployment_later(api, deployment.id)
    prefect_api.force_state(api, run_id, Running())
    first_key = live.admin_key()

    # Crash: the supervisor dies without cleaning up; its children follow (PDEATHSIG).
    live.stop(signal.SIGKILL)
    wait_for(
        live.alive_descendants,
        "the children of the killed m1 up to exit",
        until=lambda alive: not alive,
        show=lambda alive: [p.pid for p in alive],
    )

    live.start()
    state = prefect_api.read_flow_run(live.prefect_api_url, run_id).state
    assert state is not None
    assert state.is_crashed(), state
    assert "restarted" in (state.message or "")
    assert first_key is not None
    assert live.admin_key() is None  # the key is printed on the first start only

    assert live.stop(signal.SIGTERM) == 0
    assert live.alive_descendants() == []
