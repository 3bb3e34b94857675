"""Every variable against the settings schema, one at a time, so one bad value is one finding.

The loader (:func:`m1lib.settings.load_settings`) refuses a whole configuration at its first
error; the validator wants all of them. Each raw value is validated with its own field's type
and constraints (pydantic, as the loader would); a refused value becomes a ``schema.invalid``
finding and its default stands in, so the other rules still see a complete :class:`Settings`.
The cross-field rules the models enforce are separate rules (:mod:`.static`), and the models are
built with ``model_construct`` so none of them raises here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from m1lib.ops.config_rules.base import Context, Hit, static_rule
from m1lib.settings import SettingDoc, Settings, iter_setting_docs

__all__ = ["SECRET_VARIABLES", "VARIABLES", "settings_from_raw"]

VARIABLES: Mapping[str, SettingDoc] = {doc.name: doc for doc in iter_setting_docs()}
"""Every variable of the schema by name: what the validator covers."""
SECRET_VARIABLES = frozenset(name for name, doc in VARIABLES.items() if doc.secret)


def _field(path: tuple[str, ...]) -> FieldInfo:
    fields = Settings.model_fields
    if len(path) == 2:
        group = fields[path[0]].annotation
        assert isinstance(group, type)
        assert issubclass(group, BaseModel)
        fields = group.model_fields
    return fields[path[-1]]


@cache
def _adapter(name: str) -> TypeAdapter[Any]:
    info = _field(VARIABLES[name].path)
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[(annotation, *info.metadata)]
    return TypeAdapter(annotation)


def _shown(name: str, value: str) -> str:
    """The value as a finding may show it: never a secret's."""
    if name in SECRET_VARIABLES:
        return "(the secret value)"
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _refusal(name: str, value: str, error: ValidationError) -> Hit:
    doc = VARIABLES[name]
    reasons = "; ".join(dict.fromkeys(item["msg"] for item in error.errors()))
    return Hit(
        name,
        f"{_shown(name, value)} is refused: {reasons} (the settings loader stops on it)",
        f"set {name} to a valid {doc.type}"
        + (f" in {doc.unit}" if doc.unit else "")
        + f" or unset it (default {doc.default or 'empty'})",
    )


def settings_from_raw(raw: Mapping[str, str]) -> tuple[Settings, list[Hit], list[str]]:
    """Settings from raw ``M1_*`` values, the hits of refused values and the unknown names.

    Never raises: a refused value is replaced by its default. Model validators (cross-field
    rules) do not run; :mod:`.static` checks the same rules as findings.
    """
    groups: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    hits: list[Hit] = []
    for name, doc in VARIABLES.items():
        if name not in raw:
            continue
        try:
            value = _adapter(name).validate_python(raw[name])
        except ValidationError as error:
            hits.append(_refusal(name, raw[name], error))
            continue
        if len(doc.path) == 2:
            groups.setdefault(doc.path[0], {})[doc.path[1]] = value
        else:
            top[doc.path[0]] = value
    for group_name, info in Settings.model_fields.items():
        group = info.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            top[group_name] = group.model_construct(**groups.get(group_name, {}))
    unknown = sorted(name for name in raw if name not in VARIABLES)
    return Settings.model_construct(**top), hits, unknown


@static_rule("schema.invalid", "CCC", "A value the settings loader refuses (type, range, format)")
def _invalid(context: Context) -> Iterator[Hit]:
    yield from context.schema_hits


@static_rule("schema.unknown", "LLL", "An M1_* variable that no setting has (a typo?)")
def _unknown(context: Context) -> Iterator[Hit]:
    for name in context.unknown:
        close = [known for known in VARIABLES if _similar(name, known)]
        hint = f"did you mean {close[0]}?" if close else "see the README's configuration table"
        yield Hit(name, f"{name} is not an M1 setting and is ignored", f"remove it; {hint}")


def _similar(a: str, b: str) -> bool:
    """Same length give or take one and at most two positions differing: a likely typo."""
    if abs(len(a) - len(b)) > 1:
        return False
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.85
