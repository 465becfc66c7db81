"""The docs hold: links resolve, the two commands come first, the layout matches the tree."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

_FENCE = re.compile(r"^```.*?^```[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
_EXTERNAL = ("http://", "https://", "mailto:")


def _prose(markdown: str) -> str:
    """The text outside fenced code blocks and code spans (where links are links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", markdown))


def links(markdown: str) -> list[str]:
    """Every link target in the prose of a Markdown document."""
    return [m.group("target") for m in _LINK.finditer(_prose(markdown))]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.replace("`", "").strip().lower()
    kept = "".join(
        c for c in text
        if c in " -_" or unicodedata.category(c)[0] in ("L", "N")
    )
    return kept.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of every heading outside code blocks (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for match in _HEADING.finditer(_FENCE.sub("", markdown)):
        base = anchor(match.group(1))
        count = seen.get(base, 0)
        out.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return out


def broken_links(doc: Path) -> list[str]:
    """The relative links of ``doc`` whose file, or whose anchor in that file, is missing."""
    text = doc.read_text(encoding="utf-8")
    problems = []
    for target in links(text):
        if target.startswith(_EXTERNAL):
            continue
        path_part, _, fragment = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            problems.append(f"{target}: {dest} does not exist")
            continue
        if (fragment and dest.suffix == ".md"
                and fragment not in anchors(dest.read_text(encoding="utf-8"))):
            problems.append(f"{target}: no heading with anchor #{fragment} in {dest.name}")
    return problems


def commands(markdown: str) -> list[str]:
    """The shell commands of the document's fenced code blocks, in order, comments removed."""
    out = []
    for block in _FENCE.findall(markdown):
        for line in block.splitlines()[1:-1]:
            command = line.split("#", 1)[0].strip()
            if command:
                out.append(command)
    return out


def layout_entries(readme: str) -> list[str]:
    """The paths the README's layout block names (indented names are under the last folder)."""
    section = readme.split("## Layout", 1)[1]
    block = _FENCE.search(section)
    assert block is not None, "the Layout section has no code block"
    paths: list[str] = []
    parent = ""
    for line in block.group(0).splitlines()[1:-1]:
        indented = line.startswith("  ")
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0].split()
        for name in names:
            paths.append(parent + name if indented else name)
        if not indented and names and names[-1].endswith("/"):
            parent = names[-1]
    return paths


def _children(folder: Path) -> set[str]:
    """A code folder's entries a reader looks for: modules, packages and data folders."""
    out = set()
    for child in folder.iterdir():
        if child.name in {"__init__.py", "__pycache__", "py.typed"} or child.name.startswith("."):
            continue
        if child.is_dir() and _holds_files(child):  # git keeps no empty folders
            out.add(child.relative_to(ROOT).as_posix() + "/")
        elif child.suffix == ".py":
            out.add(child.relative_to(ROOT).as_posix())
    return out


def _holds_files(folder: Path) -> bool:
    return any(p.is_file() and "__pycache__" not in p.parts for p in folder.rglob("*"))


def _covered(paths: list[str]) -> set[str]:
    """The named paths and every folder above them, folders spelled with a trailing slash."""
    out = set()
    for path in paths:
        out.add(path)
        parts = path.rstrip("/").split("/")
        for i in range(1, len(parts)):
            out.add("/".join(parts[:i]) + "/")
    return out


# -- the checks themselves, on small documents ------------------------------------------------


def test_link_check_reports_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    """A link to a missing file or to a missing heading is reported; a good one is not."""
    (tmp_path / "other.md").write_text("# Other\n\n## The `up` command (local)\n", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](other.md#the-up-command-local) [gone](missing.md) [bad](other.md#nope)\n"
        "`[not a link](nowhere.md)`\n```\n[also not](nowhere.md)\n```\n"
        "[web](https://example.com/x.md)\n",
        encoding="utf-8",
    )
    problems = broken_links(doc)
    assert len(problems) == 2
    assert problems[0].startswith("missing.md:")
    assert problems[1].startswith("other.md#nope:")


def test_layout_parser_puts_indented_names_under_the_last_folder() -> None:
    """Indented names in the layout block are read as paths under the folder above them."""
    readme = (
        "## Layout\n\n```\nfunction_app.py   app\nshared/   core\n"
        "  a.py b/   two  names\n  platform/port.py   port\ntests/\n  unit/   pure\n```\n"
    )
    assert layout_entries(readme) == [
        "function_app.py", "shared/", "shared/a.py", "shared/b/", "shared/platform/port.py",
        "tests/", "tests/unit/",
    ]


# -- the real docs -------------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc: Path) -> None:
    """Every relative link in README.md and docs/*.md points at an existing file (and heading)."""
    assert broken_links(doc) == []


def test_docs_folder_is_linked_from_the_readme() -> None:
    """Every page in docs/ is reachable from the README in one hop."""
    targets = {t.partition("#")[0] for t in links((ROOT / "README.md").read_text("utf-8"))}
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert pages - targets == set()


def test_readme_starts_with_make_demo_then_make_test() -> None:
    """The README's first two commands are `make demo` and `make test`, and both are targets."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert commands(readme)[:2] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)


def test_layout_names_only_paths_that_exist() -> None:
    """Every path the README's layout names exists in the tree."""
    missing = [p for p in layout_entries((ROOT / "README.md").read_text("utf-8"))
               if not (ROOT / p).exists()]
    assert missing == []


@pytest.mark.parametrize("folder", ["shared", "shared/platform", "functions", "cli", "tests"])
def test_layout_names_every_module_of_the_code_folders(folder: str) -> None:
    """Every module, package and folder directly under the code folders is in the layout."""
    named = _covered(layout_entries((ROOT / "README.md").read_text("utf-8")))
    assert _children(ROOT / folder) - named == set()


def test_validation_page_names_every_report_code() -> None:
    """docs/validation.md names every error and warning code the validator can report."""
    from shared.dataset.codes import ERROR_CODES, WARNING_CODES

    page = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")
    assert [c for c in [*ERROR_CODES, *WARNING_CODES] if f"`{c}`" not in page] == []
