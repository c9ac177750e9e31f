"""The reporting layer: a finished run's analysis (curves, confusion, embeddings, shift) and its figures."""
