"""Cost tracking and optimisation: prices, recording, analysis, budgets and recommendations."""
