"""Judging: pure metrics over token ids, log-probs and text, the budgets they are held to,
and the verdicts (drift, degeneration, constraints, aggregates, replay) with their messages."""
