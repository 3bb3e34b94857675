"""The configuration validator's rules, one module per kind; importing the package registers all.

:mod:`.base` holds the vocabulary and the table (:data:`~.base.RULES`); :mod:`.schema` checks
every variable against the settings schema; :mod:`.static` the values and local files;
:mod:`.live` and :mod:`.tls` probe what the configuration names. The public entry point is
:mod:`m1lib.ops.config_validator`.
"""

from m1lib.ops.config_rules import live, schema, static, tls  # noqa: F401 - they register rules
