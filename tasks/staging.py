"""Staging tasks: thin wrappers over ``m1lib.ops.staging``, and the Secret blocks they use.

The PostgreSQL password never travels as a parameter or a task result (Prefect stores those): each
task reads it from its Secret block itself and puts it into the plan it works on.
"""

from __future__ import annotations

from prefect import task
from prefect.blocks.system import Secret

from m1lib.ops import staging
from m1lib.ops.staging import StagingPlan, StagingResult, StepResult
from tasks.retry import io_task


def _secret(block: str) -> str | None:
    """The value of Secret block ``block``; None when there is no such block."""
    try:
        value = Secret.load(block).get()  # type: ignore[union-attr]
    except ValueError:
        return None
    return value if isinstance(value, str) and value else None


@task(name="preview-staging", persist_result=False)
def preview_staging(plan: StagingPlan, password_block: str) -> StagingResult:
    """What a setup would change; reads only."""
    full = plan.with_password(_secret(password_block))
    return staging.setup_staging(full, apply=False, deliver_key=_never)


@task(name="apply-staging", persist_result=False)
def apply_staging(plan: StagingPlan, password_block: str, admin_key_block: str) -> StagingResult:
    """Every step; a new admin key goes to the Secret block ``admin_key_block``, never a log."""

    def store_key(_name: str, key: str) -> str:
        Secret(value=key).save(admin_key_block, overwrite=True)
        return f"in the Prefect Secret block {admin_key_block!r}"

    full = plan.with_password(_secret(password_block))
    return staging.setup_staging(full, deliver_key=store_key)


@io_task("verify-api")
def verify_api(api_url: str) -> StepResult:
    """The API's /health/live and /health/ready; starts nothing."""
    return staging.verify_api(api_url)


def _never(_name: str, _key: str) -> str:
    raise AssertionError("a preview creates no credential")
