"""Batch embedding jobs: check, index the keys, screen, encode (locally or on Ray), commit through sinks."""
