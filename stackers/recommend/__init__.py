"""Recommenders on stored item embeddings: interactions, candidate generators, a LambdaRank stack."""
