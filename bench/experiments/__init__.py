"""The textbook's experiments beyond the benchmark table: ``seqbench gradients`` (gradients)."""
