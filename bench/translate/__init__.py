"""seqbench translate: the language pair (data), the encoder-decoder models (models) and the run (run)."""
