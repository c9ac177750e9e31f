"""competition: K-fold CV, tuning, blending and reports for the written + spoken digits competition.

The Python API (``competition.api``), loaded on first use so that ``import competition`` stays fast::

    import competition
    run = competition.cv("data/wsd", models=["fusion"], workdir="/tmp/w")
    competition.submit([run]).write("/tmp/subs")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "CVRun",
    "Submission",
    "TuneResult",
    "auto",
    "cv",
    "leaderboard",
    "load",
    "report",
    "score",
    "submit",
    "tune",
]

if TYPE_CHECKING:
    from competition.api import CVRun, Submission, TuneResult, auto, cv, leaderboard, load, report, score, submit, tune


def __getattr__(name: str) -> Any:
    # PEP 562: the API's names import torch and scikit-learn, so they load when first used, not on import.
    if name in __all__:
        from competition import api

        return getattr(api, name)
    raise AttributeError(f"module 'competition' has no attribute {name!r}")
