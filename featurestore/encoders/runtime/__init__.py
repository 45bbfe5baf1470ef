"""Where and how a model runs: device, backend and precision plans, weight lookup, derived-file caches."""
