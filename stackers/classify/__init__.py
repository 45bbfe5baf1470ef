"""Classifiers on stored features: tuned probes, meta learners, the StackingClassifier, zero-shot CLIP, alignment."""
