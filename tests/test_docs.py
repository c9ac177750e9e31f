"""The README and docs/: the set-up commands come first, every page is reachable and its links resolve, the
generated reference matches the code, every flag and config key the pages name exists, and nothing reads as a
development log."""

import dataclasses
import re
from pathlib import Path

import pytest

from competition.cli import reference
from competition.config import KEY_DOCS, KEY_SECTIONS, Config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
SETUP = [
    "python3 -m pip install -e . && python3 run.py cv",
    'python3 -m pip install -e ".[dev]" && python3 -m pytest',
]
KINDS = ["docs/tutorial.md", "docs/howto/", "docs/reference/", "docs/explanation/"]
# Flags of other programs the pages show (pip, dask, pytest, mlflow); bench scripts' flags are read from bench/.
OTHER_FLAGS = {"--nworkers", "--nthreads", "--backend-store-uri", "--durations", "--help", "--check"}
# What a development log says and a user page does not.
DEV_LOG = re.compile(
    r"issue \d+|issue-\d+|next session|the lead|helper's|helpers'|\bbranch(es)?\b|/work/|/home/|(?-i:\bTODO\b)|to-do|"
    r"not done|\bi1\dm?\b|this session|not yet checked|left for later",
    re.IGNORECASE,
)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    text = re.sub(r"^    .*$", "", text, flags=re.M)  # indented code blocks hold no headings
    return {_slug(h) for h in re.findall(r"^#{1,6} +(.*)$", text, flags=re.M)}


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _code_lines(text: str) -> list[str]:
    """The lines of indented and fenced code blocks."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    return re.findall(r"^    (\S.*)$", text, flags=re.M) + [ln for block in fenced for ln in block.splitlines()]


def test_readme_starts_with_the_two_setup_commands() -> None:
    code = re.findall(r"^    (\S.*)$", (ROOT / "README.md").read_text(), flags=re.M)
    assert code[:2] == SETUP


def test_readme_links_the_map_and_the_four_kinds() -> None:
    targets = _links((ROOT / "README.md").read_text())
    assert "docs/index.md" in targets
    assert [k for k in KINDS if not any(t.startswith(k) for t in targets)] == []


def test_every_docs_page_is_linked_from_the_map_and_has_the_navigation_bar() -> None:
    index = DOCS / "index.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in _links(index.read_text())}
    pages = [p for p in DOCS.rglob("*.md") if p != index]
    assert [p.relative_to(DOCS).as_posix() for p in pages if p.resolve() not in linked] == []
    for page in [index, *pages]:
        first = page.read_text().splitlines()[:3]
        assert any("index.md" in line and "tutorial.md" in line for line in first), page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _links(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path) if path else page
        if not dest.exists():
            broken.append(f"{target} (no file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
            broken.append(f"{target} (no heading)")
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_development_log_talk(page: Path) -> None:
    hits = [m.group(0) for m in DEV_LOG.finditer(page.read_text())]
    assert hits == []


# --- the reference: generated from the code, and the only names the pages may use --------------------------------


@pytest.mark.parametrize("name", sorted(reference.pages()))
def test_generated_reference_is_up_to_date(name: str) -> None:
    """Fails when the parser or the Config changed and `python -m competition.cli.reference` was not rerun."""
    assert (DOCS / "reference" / name).read_text() == reference.pages()[name]


def test_every_config_key_has_a_doc_line_and_a_section() -> None:
    fields = [f.name for f in dataclasses.fields(Config)]
    assert list(KEY_DOCS) == fields  # one line per key, in field order
    assert all(KEY_DOCS[k].strip() for k in fields)
    assert fields[0] in KEY_SECTIONS and set(KEY_SECTIONS) <= set(fields)


def test_the_generated_reference_names_every_flag_and_key() -> None:
    cli, config = reference.pages()["cli.md"], reference.pages()["config.md"]
    for command, options in reference.flags().items():
        section = cli.split(f"\n## {command}\n", 1)[1].split("\n## ", 1)[0]
        assert [o for o in options if f"`{o}`" not in section] == [], command
    assert [k for k in KEY_DOCS if f"| `{k}` |" not in config] == []


def _bench_flags() -> set[str]:
    return {
        f for p in (ROOT / "bench").glob("*.py") for f in re.findall(r"[\"'](--[a-z][a-z0-9-]*)[\"']", p.read_text())
    }


def _named_flags(text: str) -> tuple[list[tuple[str, str]], set[str]]:
    """(command, flag) of every `run.py COMMAND ... --flag` code line, and every other `--flag` the text names."""
    per_command, loose = [], set()
    for line in _code_lines(text):
        m = re.search(r"run\.py (\w+)(.*)", line.split("#", 1)[0])
        if m:
            per_command += [(m.group(1), f) for f in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2))]
    prose = re.sub(r"^    .*$", "", text, flags=re.M)
    for span in re.findall(r"`([^`\n]+)`", prose):
        loose |= set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", span))
    return per_command, loose


def _named_keys(text: str) -> set[str]:
    """Config keys the text names: `--set KEY=`, `per_model.<model>.KEY`, and backticked `key=value` settings."""
    keys = set(re.findall(r"--set (?:per_model\.\w+\.)?([a-z_]+)=", text))
    keys |= set(re.findall(r"per_model\.(?!<)\w+\.([a-z_]+)", text))
    for span in re.findall(r"`([^`\n]+)`", text):
        if re.fullmatch(r"[a-z_]+=[a-z0-9_.,+-]+( [a-z_]+=[a-z0-9_.,+-]+)*", span):  # not Python's `verbose=True`
            keys |= set(re.findall(r"(?:^| )([a-z_]+)=", span))
    return keys


def test_every_flag_named_in_the_docs_exists() -> None:
    flags = reference.flags()
    known = {f for fs in flags.values() for f in fs} | _bench_flags() | OTHER_FLAGS
    wrong = []
    for page in PAGES:
        per_command, loose = _named_flags(page.read_text())
        wrong += [f"{page.name}: run.py {c} {f}" for c, f in per_command if c in flags and f not in flags[c]]
        wrong += [f"{page.name}: run.py {c}" for c, _ in per_command if c not in flags]
        wrong += [f"{page.name}: {f}" for f in sorted(loose - known)]
    assert wrong == []


def test_every_config_key_named_in_the_docs_exists() -> None:
    wrong = [f"{p.name}: {k}" for p in PAGES for k in sorted(_named_keys(p.read_text())) if k not in KEY_DOCS]
    assert wrong == []


def test_the_checks_catch_a_missing_flag_and_key() -> None:
    """The two checks above can fail: a flag of another command and an unknown key are caught."""
    per_command, loose = _named_flags("    python3 run.py score --full x.csv\n\nuse `--no-such-flag`\n")
    assert ("score", "--full") in per_command and "--full" not in reference.flags()["score"]
    assert "--no-such-flag" in loose
    assert _named_keys("`--set learning_rate=1` and `early_stopping=true`") == {"learning_rate", "early_stopping"}
