"""seqbench bench."""
