"""The store layer: atomic file writes, run folders and their fold files, unit claims, prediction files."""
