"""Honest evaluation: held-out metrics with intervals, comparisons, leaderboards, learning curves, reports."""
