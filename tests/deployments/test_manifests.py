"""The container and cluster files, checked by structure (no engine or cluster runs here): they
parse, carry the keys that matter, probe real routes, name only real settings and real verbs."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.prefect_yaml import SHIPPED_FILE
from m1lib.cli import build_parser
from m1lib.settings import PROJECT_ROOT, Settings, iter_setting_docs

DEPLOYMENTS = PROJECT_ROOT / "deployments"
DOCKERFILE = DEPLOYMENTS / "Dockerfile"
COMPOSE = DEPLOYMENTS / "docker-compose.staging.yml"
K8S = DEPLOYMENTS / "k8s"
M1_NAME = re.compile(r"\bM1_[A-Z0-9_]+\b")


@cache
def setting_names() -> frozenset[str]:
    return frozenset(doc.name for doc in iter_setting_docs())


@cache
def get_routes() -> frozenset[str]:
    """Every GET path of the API, read from the app itself (nothing is started)."""
    from m1lib.api.app import create_app

    app = create_app(Settings(_env_file=None, data_dir=Path("/nonexistent-m1-test")))
    return frozenset(path for path, ops in app.openapi()["paths"].items() if "get" in ops)


@cache
def verbs() -> frozenset[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return frozenset(actions[0].choices)


def pool_name() -> str:
    data = yaml.safe_load(SHIPPED_FILE.read_text())
    return str(data["definitions"]["work_pool"]["name"])


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def k8s_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] != "Kustomization":
                yield path.name, document


def k8s_kind(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind} {name} expected in deployments/k8s, found {len(found)}"
    return found[0]


def test_dockerfile_is_slim_python_non_root_with_the_m1_entrypoint_and_a_real_verb() -> None:
    text = DOCKERFILE.read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert instructions[0] == "FROM python:3.11-slim"
    user = next(line for line in instructions if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in {"0", "root"}
    assert 'ENTRYPOINT ["m1"]' in instructions
    command = next(line for line in instructions if line.startswith("CMD "))
    assert yaml.safe_load(command[4:])[0] in verbs()
    health = re.search(r"HEALTHCHECK .*?(http://127\.0\.0\.1:8000(/[\w/]+))", text, re.S)
    assert health is not None
    assert health.group(2) in get_routes()
    for name in M1_NAME.findall(text):
        assert name in setting_names(), f"Dockerfile: {name} is not a setting"


def test_compose_has_the_issues_services_each_waiting_on_healthy_dependencies() -> None:
    services = compose()["services"]
    assert {
        "postgres",
        "redis",
        "prefect-server",
        "prefect-services",
        "prefect-worker",
        "m1-api",
    } <= set(services)
    for name, service in services.items():
        for needed, rule in service.get("depends_on", {}).items():
            target = services[needed]
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in target, (
                    f"{name} waits on {needed}, which has no healthcheck"
                )
            else:  # a one-shot step, done before the service starts
                assert condition == "service_completed_successfully", (name, needed, condition)
                assert target.get("restart") == "no", f"{needed} is waited for but restarts"
    assert services["m1-api"]["depends_on"]["m1-setup"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_runs_prefects_server_services_and_a_worker_on_prefect_yamls_pool() -> None:
    services = compose()["services"]
    assert services["prefect-server"]["command"][:3] == ["prefect", "server", "start"]
    assert "--no-services" in services["prefect-server"]["command"]
    assert services["prefect-services"]["command"] == ["prefect", "server", "services", "start"]
    worker = services["prefect-worker"]
    assert worker["entrypoint"] == ["prefect"]
    assert worker["command"][:2] == ["worker", "start"]
    assert worker["command"][worker["command"].index("--pool") + 1] == pool_name()


def test_compose_m1_services_run_real_verbs_probe_real_routes_and_name_real_settings() -> None:
    services = compose()["services"]
    m1_services = [s for s in services.values() if str(s.get("image", "")).startswith("m1:")]
    assert len(m1_services) >= 3
    for service in m1_services:
        if "entrypoint" not in service:  # the image's entrypoint: `m1`
            assert service["command"][0] in verbs(), service["command"]
    for name, service in services.items():
        for line in _healthcheck_commands(service):
            for path in re.findall(r"http://127\.0\.0\.1:8000(/[\w/]+)", line):
                assert path in get_routes(), f"{name} probes {path}, not a route"
    assert "/health/ready" in " ".join(_healthcheck_commands(services["m1-api"]))
    for name in M1_NAME.findall(COMPOSE.read_text()):
        assert name in setting_names(), f"compose: {name} is not a setting"


def _healthcheck_commands(service: dict[str, Any]) -> list[str]:
    test = service.get("healthcheck", {}).get("test", [])
    return [test] if isinstance(test, str) else [str(part) for part in test]


def test_k8s_files_parse_and_hold_every_kind_the_issue_asks_for() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in k8s_documents()}
    assert {
        ("Deployment", "m1-api"),
        ("HorizontalPodAutoscaler", "m1-api"),
        ("NetworkPolicy", "m1-api"),
        ("PodDisruptionBudget", "m1-api"),
        ("Job", "m1-migrate"),
        ("Deployment", "m1-prefect-worker"),
    } <= kinds
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name
        for p in K8S.glob("*.yaml")
        if p.name not in {"kustomization.yaml", "secret.example.yaml"}
    )


def test_k8s_api_probes_hit_real_routes_and_it_has_limits() -> None:
    api = k8s_kind("Deployment", "m1-api")
    pod = api["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["args"][0] in verbs()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in get_routes(), f"{probe} probes {get['path']}, not a route"
        assert get["port"] in ports
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    labels = pod["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = k8s_kind("HorizontalPodAutoscaler", "m1-api")["spec"]
    assert (hpa["scaleTargetRef"]["kind"], hpa["scaleTargetRef"]["name"]) == (
        "Deployment",
        "m1-api",
    )
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    pdb = k8s_kind("PodDisruptionBudget", "m1-api")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    policy = k8s_kind("NetworkPolicy", "m1-api")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert {port["port"] for rule in policy["ingress"] for port in rule["ports"]} == set(
        ports.values()
    )


def test_k8s_migration_job_and_worker_run_real_commands() -> None:
    job = k8s_kind("Job", "m1-migrate")["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["db", "upgrade"]
    assert "db" in verbs()
    assert job["restartPolicy"] in {"OnFailure", "Never"}
    worker = k8s_kind("Deployment", "m1-prefect-worker")["spec"]["template"]["spec"]
    container = worker["containers"][0]
    assert container["command"] == ["prefect"]
    assert container["args"][container["args"].index("--pool") + 1] == pool_name()
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml")))
def test_every_m1_variable_in_the_k8s_files_is_a_setting(name: str) -> None:
    for found in M1_NAME.findall((K8S / name).read_text()):
        assert found in setting_names(), f"{name}: {found} is not a setting"


def test_setup_script_calls_real_verbs() -> None:
    script = (PROJECT_ROOT / "scripts" / "setup-staging.sh").read_text()
    calls = re.findall(r'"\$\{m1\[@\]\}" (\w+)', script) + re.findall(
        r"\(\"\$\{m1\[@\]\}\" (\w+)", script
    )
    assert set(calls) >= {"staging", "api"}
    guarded = {"validate"}  # run only when `m1 validate --help` answers (an M1 with the validator)
    assert set(calls) - guarded <= verbs()
    assert "set -euo pipefail" in script.splitlines()


@pytest.mark.parametrize("name", ["deployment.md", "troubleshooting.md"])
def test_deployment_docs_link_only_files_that_exist(name: str) -> None:
    page = PROJECT_ROOT / "docs" / name
    links = re.findall(r"\]\(([^)#:]+)\)", page.read_text())
    assert links
    for link in links:
        assert (page.parent / link).exists(), f"docs/{name} links {link}, which does not exist"


def test_troubleshooting_links_every_runbook_it_names() -> None:
    text = (PROJECT_ROOT / "docs" / "troubleshooting.md").read_text()
    linked = set(re.findall(r"\(runbooks/(\w+)\.md\)", text))
    assert {"database", "redis", "api", "prefect", "revocation_sync"} <= linked
