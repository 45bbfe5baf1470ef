"""What every layer shares: parameter validation, optional imports, progress, unit-norm vectors, atomic files."""
