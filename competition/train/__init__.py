"""The training layer: the learner, one unit's recipe, executors (local and Dask), cv, refits, pseudo-labels."""
