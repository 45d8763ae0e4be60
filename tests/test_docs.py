"""docs/ covers the product: every registered kind has a section in docs/kinds/, every `polyir`
subcommand a section in docs/cli.md naming each of its options; links between the pages and from
the README resolve inside the repository, and nothing points outside it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import polyir
from polyir.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def headings(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("#")]


def section(text: str, heading: str) -> str:
    """The text from `heading` to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines))
                if re.match(rf"#{{1,{level}}} ", lines[i])), len(lines))
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("kind", sorted(polyir.KINDS))
def test_every_kind_has_a_section(kind):
    found = [p.name for p in sorted((DOCS / "kinds").glob("*.md"))
             if any(re.match(rf"#+ `{kind}`$", h) for h in headings(p))]
    assert found, (f"kind {kind} has no '## `{kind}`' section in docs/kinds/*.md: document its "
                   "equation, fields with dtypes, ports and targets")
    assert len(found) == 1, f"kind {kind} is documented twice: {found}"


def subcommand_options(name: str) -> list[str]:
    sub = next(a for a in build_parser()._subparsers._group_actions)  # the COMMAND argument
    parser = sub.choices[name]
    return [s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_a_section_naming_its_options(name):
    text = (DOCS / "cli.md").read_text()
    heading = f"## `polyir {name}`"
    assert heading in text.splitlines(), f"docs/cli.md has no '{heading}' section"
    body = section(text, heading)
    if "[backend options]" in body:                    # run / compare / bench share a section
        body += section(text, "## Backend options")
    bullets = [line for line in body.splitlines() if line.startswith("- ")]
    missing = [o for o in subcommand_options(name)
               if not any(re.search(rf"`{re.escape(o)}[ `]", b) for b in bullets)]
    assert not missing, f"docs/cli.md's section on polyir {name} does not mention {missing}"


def markdown_files():
    return [ROOT / "README.md"] + sorted(DOCS.rglob("*.md"))


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        resolved = (page.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name} links outside the repo: {target}"
        assert resolved.exists(), f"{page.name} links to a missing file: {target}"


def test_nothing_reads_outside_the_repository():
    """No test, doc or code names the sibling folder the project was developed beside."""
    needle = "sha" + "red/"
    hits = []
    for base in ("README.md", "docs", "polyir", "tests", "examples"):
        p = ROOT / base
        for f in ([p] if p.is_file() else p.rglob("*")):
            if f.is_file() and f.suffix in (".py", ".md", ".c", ".h", ".txt", ".toml", ""):
                if needle in f.read_text(errors="replace"):
                    hits.append(str(f.relative_to(ROOT)))
    assert not hits


DIRECTIONS = r"\b(torch|heyoka|lower|nir|from_nir)\b"


@pytest.mark.parametrize("kind", sorted(polyir.KINDS))
def test_targets_lines_match_the_rule_tables(kind):
    """Where a kind's section says 'Targets: ...', it names exactly the directions whose rule
    table has the kind (what `polyir info --kinds` prints)."""
    from polyir.cli.tables import coverage
    for page in sorted((DOCS / "kinds").glob("*.md")):
        text = page.read_text()
        heading = next((h for h in headings(page) if re.match(rf"#+ `{kind}`$", h)), None)
        if heading is None:
            continue
        body = section(text, heading)
        if "Targets:" not in body:
            return
        paragraph = body.split("Targets:", 1)[1].split("\n\n", 1)[0]
        named = set(re.findall(DIRECTIONS, paragraph))
        assert named == set(coverage()[kind]), f"{page.name}, {kind}: says {sorted(named)}"


def test_readme_lists_every_subcommand():
    text = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"\w+", section(text, "## Command line")))
    assert set(COMMANDS) <= listed, sorted(set(COMMANDS) - listed)


def test_api_page_names_every_public_name():
    text = (DOCS / "api.md").read_text()
    missing = [n for n in polyir.__all__
               if not re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", text)]
    assert not missing, f"docs/api.md does not mention {missing}"


def test_the_site_builds_with_every_page_in_the_nav_and_every_link_resolved(tmp_path):
    """`make docs`: mkdocs --strict fails on a page missing from the nav, a link to a missing
    page or heading, and a link it cannot resolve."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                             str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "kinds" / "rules.html").exists()
