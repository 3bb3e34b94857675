"""Production-validation tasks: the suite's secrets from a Prefect Secret block, one group's run.

No retries: a scenario that fails is the finding, and probing again would hide a flaky target.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE

from m1lib.ops.validation.scenario import Context, Result, run_scenarios
from m1lib.ops.validation.suite import SCENARIOS
from m1lib.ops.validation.target import Credentials
from m1lib.settings import Settings

__all__ = ["run_group", "validation_credentials"]

logger = logging.getLogger("m1.tasks.validation")


def _block_values(name: str) -> dict[str, Any] | None:
    """The Secret block's JSON object (a bare string is taken as the admin key); None if absent."""
    try:
        secret = Secret.load(name)
    except ValueError:  # no such block: the environment's secrets only
        return None
    value = secret.get()  # type: ignore[union-attr]
    if isinstance(value, str):
        return {"admin_key": value}
    if isinstance(value, dict):
        return value
    logger.warning("the Secret block %r holds neither a key nor a JSON object", name)
    return None


@task(name="load-validation-secrets", cache_policy=NO_CACHE)
def validation_credentials(settings: Settings) -> Credentials:
    """Secrets from the Secret block ``M1_VALIDATION_SECRET_BLOCK``, else the environment; never
    parameters, so the Prefect UI never shows them."""
    return Credentials.from_settings(settings, _block_values(settings.validation.secret_block))


@task(name="run-scenario-group", task_run_name="validate-{group}", cache_policy=NO_CACHE)
def run_group(context: Context, group: str) -> list[Result]:
    """The scenarios of ``group``, one after another; never raises for what they find."""
    return run_scenarios([s for s in SCENARIOS if s.group == group], context)
