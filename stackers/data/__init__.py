"""Stored features as training data: joins by key into a TrainingSet, predictions and OOF scores to and from the store."""
