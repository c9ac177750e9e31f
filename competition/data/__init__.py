"""The data layer: loading a competition folder, its shapes, and its exact duplicate rows."""
