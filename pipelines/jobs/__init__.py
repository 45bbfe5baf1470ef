"""Jobs over stored features: train, apply and report stackers and recommenders, and serve new raw rows
(``predict``: the rows a model's sets lack are embedded with each set's recorded spec first)."""

from pipelines.jobs._recommend import evaluate_recommender, recommend_for_user, train_recommender
from pipelines.jobs._serve import NotRecomputableWarning, Served, predict, serve
from pipelines.jobs._stack import predict_stack, report_stack, serve_stack, train_stack

__all__ = ["NotRecomputableWarning", "Served", "evaluate_recommender", "predict", "predict_stack",
           "recommend_for_user", "report_stack", "serve", "serve_stack", "train_recommender", "train_stack"]
