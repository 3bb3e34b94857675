"""Cost tracking and optimisation (issue 12): what model calls and paid tool calls cost.

:mod:`m1lib.ops.cost.prices` holds the price table (built-in defaults plus the operator's
``M1_COST_PRICES_FILE``) and exact money arithmetic; :mod:`m1lib.ops.cost.record` prices one model
call and records it as a ``cost_updates`` event (``m1lib.record_cost``). Money is kept exact, as
integer pico-dollars, wherever it is summed; only the event carries a float, rounded half-even to
the micro-dollar.
"""
