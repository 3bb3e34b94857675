from __future__ import annotations

from pathlib import Path

import pytest

from deployments.prefect_yaml import DeploymentFileError, load_deployment_specs
from m1lib.settings import PROJECT_ROOT

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


def test_every_deployment_has_a_description_an_existing_entrypoint_and_the_m1_tag() -> None:
    specs = load_deployment_specs(PREFECT_YAML)
    assert specs
    for spec in specs:
        path, _, function = spec.entrypoint.partition(":")
        assert (PROJECT_ROOT / path).exists(), spec.entrypoint
        assert f"def {function}(" in (PROJECT_ROOT / path).read_text()
        assert "m1" in spec.tags, spec.name
        assert len(spec.description) > 40, spec.name
        assert spec.enforce_parameter_schema


def test_database_setup_is_deployed_one_at_a_time_with_a_grace_period() -> None:
    spec = {s.name: s for s in load_deployment_specs(PREFECT_YAML)}["database-setup"]
    assert spec.concurrency_limit == 1
    assert spec.grace_period_seconds is not None
    assert spec.grace_period_seconds >= 60


def test_missing_field_names_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text("deployments:\n  - name: x\n    entrypoint: flows/x.py:x\n")
    with pytest.raises(DeploymentFileError, match=r"deployments\[0\]\.description: missing"):
        load_deployment_specs(path)


def test_schedules_are_read(tmp_path: Path) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text(
        "deployments:\n  - name: x\n    entrypoint: flows/x.py:x\n    description: d\n"
        "    schedules:\n      - interval: 60\n      - cron: '0 3 * * *'\n        timezone: UTC\n"
    )
    (spec,) = load_deployment_specs(path)
    assert spec.schedules[0].interval_s == 60
    assert spec.schedules[1].cron == "0 3 * * *"
    assert spec.schedules[1].timezone == "UTC"
