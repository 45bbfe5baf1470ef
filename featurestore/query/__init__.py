"""Reading the store: feature set versions as Arrow or numpy, the DuckDB catalog, fenced SQL, time travel."""
