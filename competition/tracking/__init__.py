"""The tracking layer: the leaderboard of a workdir and optional MLflow logging."""
