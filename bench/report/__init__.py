"""REPORT.md and its parts: the textbook's claims (textbook), the tables and verdicts (tables), the
figures (figures), one table formatter (fmt), run comparison (compare) and training runs (training)."""
