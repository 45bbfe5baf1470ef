"""Honest evaluation: held-out metrics with bootstrap intervals, comparisons against the baselines a strong user
would fit, leaderboards, learning curves, ranking metrics, reports and plots."""

from stackers.evaluate._compare import Comparison, compare
from stackers.evaluate._curve import LearningCurve
from stackers.evaluate._drift_plot import plot_drift
from stackers.evaluate._leaderboard import Leaderboard, leaderboard
from stackers.evaluate._learning_curve import learning_curve
from stackers.evaluate._metrics import METRICS, bootstrap_indices, bootstrap_scores, interval, score
from stackers.evaluate._report import ReportPaths, report

__all__ = ["METRICS", "Comparison", "Leaderboard", "LearningCurve", "ReportPaths", "bootstrap_indices",
           "bootstrap_scores", "compare", "interval", "leaderboard", "learning_curve", "plot_drift", "report", "score"]
