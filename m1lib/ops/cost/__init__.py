"""Cost tracking and optimisation: prices, spend records, budgets and the cache TTL policy (issue 12)."""
