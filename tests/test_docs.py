"""The README and docs/: the two set-up commands come first, and every relative link resolves."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETUP = [
    "python3 -m pip install -e . && python3 run.py cv",
    'python3 -m pip install -e ".[dev]" && python3 -m pytest',
]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    text = re.sub(r"^    .*$", "", text, flags=re.M)  # indented code blocks hold no headings
    return {_slug(h) for h in re.findall(r"^#{1,6} +(.*)$", text, flags=re.M)}


def test_readme_starts_with_the_two_setup_commands() -> None:
    code = re.findall(r"^    (\S.*)$", (ROOT / "README.md").read_text(), flags=re.M)
    assert code[:2] == SETUP


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages
    assert [p.name for p in pages if f"](docs/{p.name})" not in readme] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path) if path else page
        if not dest.exists():
            broken.append(f"{target} (no file)")
        elif anchor and anchor not in _anchors(dest.read_text()):
            broken.append(f"{target} (no heading)")
    assert broken == []
