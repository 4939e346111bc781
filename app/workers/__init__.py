"""Background work: one sync worker per host."""
