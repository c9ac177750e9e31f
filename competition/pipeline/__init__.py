"""pipeline: ``run.py auto``, the whole pipeline in one command within a time budget: measure the data and this
machine (``probe``), choose the stages (``plan``, pure), run them in order with a deadline and write
``auto.csv`` (``run``). (Named ``pipeline``, not ``auto``, so that ``competition.auto`` stays the API function.)"""
