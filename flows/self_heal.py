"""Self-heal: the remediation plan of one failing component, each step verified by its check.

Started by the health flow (``run_deployment("self-heal/self-heal", parameters={"component": ...,
"incident_id": ...})``) at a failure streak's threshold, or by hand. Each step issues a control
command, waits for the live replicas' acks, re-runs the component's check and appends the step with
its outcome to the incident; the run stops at the first step that verifies healthy. When none does,
the incident stays open for the streak's next heal or its escalation. ``dry_run`` shows the plan
and changes nothing. Plans per component: m1lib.ops.remediation, docs/contracts.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow

from flows.shape import FlowReport, apply_unless_dry_run, publish
from m1lib.ops.remediation import BACK_TO_REDIS, Step, StepOutcome, check_component, plan
from m1lib.ops.report import Status, runbook
from tasks.healing import escalate, find_incident, look, record, run_step

FLOW_NAME = "self-heal"


@dataclass(frozen=True)
class Before:
    """What the run saw before acting."""

    status: str
    check: str
    on_memory: list[str]  # redis: live replicas whose cache is on memory
    paused_by: str | None

    @property
    def failing(self) -> bool:
        return Status(self.status).failing


@flow(name=FLOW_NAME, log_prints=True)
def self_heal(
    component: str, incident_id: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Run ``component``'s remediation plan (stop at the first step that verifies), record each
    step on the incident (``incident_id``, else the component's open one), publish a report."""
    check_component(component)  # a clear error naming the components before anything runs
    status, check, on_memory, paused = look(component)
    before = Before(status, check, on_memory, paused)
    steps = choose_steps(component, before)
    incident, outcomes = apply_unless_dry_run(
        dry_run,
        apply=lambda: _apply(component, incident_id, before, steps),
        rehearse=lambda: (incident_id, [_planned(step) for step in steps]),
    )
    return publish(heal_report(component, incident, dry_run, before, outcomes))


def choose_steps(component: str, before: Before) -> list[Step]:
    """The plan when the component fails; when it passes, nothing, except Redis back while
    replicas still sit on their memory cache: then only the move back."""
    if before.failing:
        return list(plan(component))
    if component == "redis" and before.on_memory:
        return [BACK_TO_REDIS]
    return []


def _planned(step: Step) -> StepOutcome:
    return StepOutcome(step.name, step.command, "planned", "", f"would: {step.why}", "", 0.0)


def _apply(
    component: str, given: int | None, before: Before, steps: list[Step]
) -> tuple[int | None, list[StepOutcome]]:
    """Run the steps; (the incident they were recorded on, their outcomes)."""
    incident_id = given

    def note(outcome: StepOutcome) -> None:
        nonlocal incident_id
        if incident_id is None:  # looked up late: the database may only now be back
            incident_id = find_incident(component)
        if incident_id is not None:
            record(incident_id, outcome.step, outcome.outcome, outcome.detail())

    if before.paused_by is not None and steps:
        skipped = StepOutcome(
            "self-heal",
            None,
            "suppressed",
            before.status,
            f"healing paused by {before.paused_by}: no step ran",
            before.check,
            0.0,
        )
        note(skipped)
        return incident_id, [skipped]
    outcomes: list[StepOutcome] = []
    for step in steps:
        outcome = run_step(component, step)
        note(outcome)
        outcomes.append(outcome)
        if outcome.outcome == "escalated" and incident_id is not None:
            escalate(
                incident_id,
                f"{component} still failing and M1 cannot restart it from a flow; "
                f"follow {runbook(component)}",
            )
        if outcome.healed:
            if component == "redis" and step is not BACK_TO_REDIS:
                _, _, on_memory, _ = look(component)
                if on_memory:  # healed by the pool reset, but some caches are pinned to memory
                    back = run_step(component, BACK_TO_REDIS)
                    note(back)
                    outcomes.append(back)
            break
    return incident_id, outcomes


def heal_report(
    component: str,
    incident_id: int | None,
    dry_run: bool,
    before: Before,
    outcomes: list[StepOutcome],
) -> FlowReport:
    """The steps and their outcomes: the artifact, the log line and the run's result (pure)."""
    healed = any(o.healed for o in outcomes)
    if dry_run:
        verdict = f"dry run: {len(outcomes)} steps planned, nothing changed"
    elif not outcomes:
        verdict = f"nothing to do: {component} is {before.status}"
    elif outcomes[-1].outcome == "suppressed":
        verdict = "suppressed: healing is paused"
    elif healed:
        verdict = f"healed by {next(o.step for o in outcomes if o.healed)}"
    elif any(o.outcome == "escalated" for o in outcomes):
        verdict = "escalated to a person"
    elif any(o.outcome == "mitigated" for o in outcomes):
        verdict = "mitigated, not healed: the incident stays open"
    else:
        verdict = "not healed: the incident stays open"
    rows = [o.row() for o in outcomes]
    lines = [
        f"# Self-heal of `{component}`" + (" (dry run)" if dry_run else ""),
        "",
        f"- incident: {incident_id if incident_id is not None else 'none'}",
        f"- before: **{before.status}** — {before.check}",
        f"- result: **{verdict}**",
        f"- runbook: {runbook(component)}",
        "",
        "| step | command | outcome | status after | acks |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {r['step']} | {r['command']} | {r['outcome']} | {r['status']} | "
            f"{str(r['acks']).replace('|', '/')} |"
            for r in rows
        ),
    ]
    return FlowReport(
        artifact_key=f"self-heal-{component.replace('_', '-')}",
        table=rows,
        description="\n".join(lines),
        log=f"self-heal {component}: {verdict} ({len(outcomes)} steps)",
        result={
            "component": component,
            "incident_id": incident_id,
            "dry_run": dry_run,
            "before": before.status,
            "healed": healed,
            "verdict": verdict,
            "actions": rows,
            "runbook": runbook(component),
        },
    )
