"""Sweeps: Optuna studies whose trials are Loupe runs (`space` parses the search space, `study` runs it,
`report` writes its table and best config)."""
