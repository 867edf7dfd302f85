"""``seqbench train``: the language models (lm), the training loop (train) and torchrun's ranks (dist)."""
