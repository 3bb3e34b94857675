"""Cost tracking and optimisation: what model calls and paid tool calls cost, and what to do about it.

:mod:`~m1lib.ops.cost.prices` holds the price table (built-in defaults plus the operator's
``M1_COST_PRICES_FILE``) and exact money arithmetic; :mod:`~m1lib.ops.cost.record` prices one model
call and records it as a ``cost_updates`` event (``m1lib.record_cost``). Money is kept exact, as
integer pico- or micro-dollars, wherever it is summed; only the event carries a float, rounded
half-even to the micro-dollar. The analysis, budgets, peaks and recommendations read those events
back through the query engine for the ``optimize-cost`` flow.
"""
