"""Paths: the default folders of the toolkit, in one place, right for a checkout and for an installed package.

Run from a source checkout (or an editable install of one), the defaults are the checkout's own folders, so
``python run.py cv`` works from anywhere. Installed as a package (``pip install .``), they are folders of the
current directory, as a competitor's project expects. The shipped recipes (``default.toml``, ``search.toml``,
...) travel inside the package and are found by name (``--config robust``).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../competition
RECIPES_DIR = PACKAGE_DIR / "configs"  # shipped recipes: package data
DEFAULT_RECIPE = RECIPES_DIR / "default.toml"
SEARCH_SPACE = RECIPES_DIR / "search.toml"


def project_root() -> Path:
    """The source checkout this package was imported from, else the current directory."""
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "run.py").is_file():
        return checkout
    return Path.cwd()


def default_data() -> Path:
    """The shipped competition of a checkout (``data/wsd``), else ``./data/wsd``."""
    return project_root() / "data" / "wsd"


def default_workdir() -> Path:
    """Where cv runs, the saved split and tune studies go (``folds/``)."""
    return project_root() / "folds"


def default_submissions() -> Path:
    """Where ``submit`` writes (``submissions/``)."""
    return project_root() / "submissions"


def user_configs() -> Path:
    """Where ``tune`` writes the best recipe it found (``configs/``)."""
    return project_root() / "configs"


def recipe_path(value: str | Path) -> Path:
    """A ``--config`` value: a TOML file's path, or the name of a shipped recipe (``robust``, ``seed``, ...)."""
    path = Path(value)
    if path.is_file() or path.suffix or len(path.parts) > 1:
        return path
    return RECIPES_DIR / f"{value}.toml"
