"""seqbench tests."""
