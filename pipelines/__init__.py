"""pipelines: runnable jobs on top of the store (sources, batch embedding, stacking, the CLI)."""
