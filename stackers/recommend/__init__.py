"""Recommenders on stored item embeddings: interactions and their time splits, candidate generators, a LambdaRank
stack (``RecommenderStack``, a scikit-learn estimator) and its full-catalogue evaluation."""

from stackers.recommend._evaluation import RankEvaluation
from stackers.recommend._generators import GENERATORS, collaborative_vectors
from stackers.recommend._interactions import Interactions
from stackers.recommend._stack import RecommenderStack

__all__ = ["GENERATORS", "Interactions", "RankEvaluation", "RecommenderStack", "collaborative_vectors"]
