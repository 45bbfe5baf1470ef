"""Saved models as plain files: a crash-safe model folder, checked .npz arrays, checked LightGBM text."""
