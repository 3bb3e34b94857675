from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path

import pytest

from deployments.prefect_yaml import (
    HEALTH_DEPLOYMENT,
    SHIPPED_FILE,
    DeploymentFileError,
    apply_settings,
    deployments_file,
    load_deployment_specs,
)
from m1lib.settings import PROJECT_ROOT, Settings


def test_every_deployment_has_a_description_an_importable_entrypoint_and_the_m1_tag() -> None:
    specs = load_deployment_specs()
    assert specs
    for spec in specs:
        found = importlib.util.find_spec(spec.module)
        assert found is not None, spec.entrypoint
        assert found.origin is not None
        assert f"def {spec.function}(" in Path(found.origin).read_text()
        assert "m1" in spec.tags, spec.name
        assert len(spec.description) > 40, spec.name
        assert spec.enforce_parameter_schema


def test_the_checkouts_prefect_yaml_is_the_file_shipped_in_the_package() -> None:
    """`prefect deploy` reads the top-level file, `m1 up` the packaged one: they must be one."""
    top_level = PROJECT_ROOT / "prefect.yaml"
    assert top_level.resolve() == SHIPPED_FILE.resolve()
    assert top_level.read_bytes() == SHIPPED_FILE.read_bytes()


def test_m1_up_serves_the_shipped_file_unless_told_another(tmp_path: Path) -> None:
    assert deployments_file(Settings(_env_file=None)) == SHIPPED_FILE.resolve()
    other = tmp_path / "mine.yaml"
    chosen = Settings(_env_file=None, prefect={"deployments_file": other})
    assert deployments_file(chosen) == other


def test_database_setup_is_deployed_one_at_a_time_with_a_grace_period() -> None:
    spec = {s.name: s for s in load_deployment_specs()}["database-setup"]
    assert spec.concurrency_limit == 1
    assert spec.grace_period_seconds is not None
    assert spec.grace_period_seconds >= 60


def test_missing_field_names_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text("deployments:\n  - name: x\n    entrypoint: flows.x.x\n")
    with pytest.raises(DeploymentFileError, match=r"deployments\[0\]\.description: missing"):
        load_deployment_specs(path)


@pytest.mark.parametrize("entrypoint", ["flows/x.py:x", "flows.x:x", "x"])
def test_an_entrypoint_that_is_not_a_module_path_is_refused_naming_it(
    tmp_path: Path, entrypoint: str
) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text(
        f"deployments:\n  - name: x\n    entrypoint: {entrypoint!r}\n    description: d\n"
    )
    with pytest.raises(DeploymentFileError, match=r"deployments\[0\]\.entrypoint: .* module path"):
        load_deployment_specs(path)


def test_schedules_are_read(tmp_path: Path) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text(
        "deployments:\n  - name: x\n    entrypoint: flows.x.x\n    description: d\n"
        "    schedules:\n      - interval: 60\n      - cron: '0 3 * * *'\n        timezone: UTC\n"
    )
    (spec,) = load_deployment_specs(path)
    assert spec.schedules[0].interval_s == 60
    assert spec.schedules[1].cron == "0 3 * * *"
    assert spec.schedules[1].timezone == "UTC"


def test_health_check_runs_every_60_s_never_overlapping_and_m1_up_applies_the_period() -> None:
    specs = load_deployment_specs()
    spec = {s.name: s for s in specs}[HEALTH_DEPLOYMENT]
    assert spec.entrypoint == "flows.health_check.health_check"
    assert [s.interval_s for s in spec.schedules] == [60.0]
    assert (spec.concurrency_limit, spec.collision_strategy) == (1, "CANCEL_NEW")
    served = apply_settings(specs, Settings(_env_file=None, health={"period_s": 20}))
    assert [s.interval_s for s in {s.name: s for s in served}[HEALTH_DEPLOYMENT].schedules] == [
        20.0
    ]
    assert [s for s in served if s.name != HEALTH_DEPLOYMENT] == [
        s for s in specs if s.name != HEALTH_DEPLOYMENT
    ]


def test_m1_up_serves_the_health_check_every_period_cancelling_a_new_run_while_one_runs() -> None:
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from deployments.serve import served_deployments

    served = served_deployments(SHIPPED_FILE, Settings(_env_file=None, health={"period_s": 25}))
    deployment = {d.name: d for d in served}[HEALTH_DEPLOYMENT]
    assert [s.schedule.interval for s in deployment.schedules] == [timedelta(seconds=25)]
    assert deployment.concurrency_limit == 1
    assert deployment.concurrency_options is not None
    assert deployment.concurrency_options.collision_strategy is ConcurrencyLimitStrategy.CANCEL_NEW
    assert deployment.flow_name == "health-check"


def test_the_runner_prefetches_less_than_half_the_shortest_interval() -> None:
    """Prefetching a whole period ahead submits two health runs at once; CANCEL_NEW then
    cancels every other one (seen with a 10 s period: one run every 20 s)."""
    from deployments.serve import PREFETCH_S, prefetch_seconds, served_specs

    def served(period_s: int) -> float:
        return prefetch_seconds(
            served_specs(SHIPPED_FILE, Settings(_env_file=None, health={"period_s": period_s}))
        )

    assert served(60) == PREFETCH_S == 10.0
    assert served(10) == 5.0
    assert served(3) == 1.5
