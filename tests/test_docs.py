"""The project's own docs/ are what shipped files cite: no citation of notes that do not ship, no dangling link."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNSHIPPED_NOTES = ("design.md", "common.md")
DOCS_CITATION = re.compile(r"(?<![\w./:-])docs/[A-Za-z0-9_.\-/]*?\.md")


def shipped_files() -> list[Path]:
    """Files git tracks, plus new files git would track (not ignored), that exist in the working tree."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return sorted({ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file()})


def read_text(path: Path) -> str | None:
    data = path.read_bytes()
    return None if b"\0" in data else data.decode("utf-8", errors="replace")


def test_no_shipped_file_cites_unshipped_notes():
    offenders = []
    for path in shipped_files():
        relative = path.relative_to(ROOT)
        if relative.parts[0] == "tests" or (text := read_text(path)) is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if any(name in line for name in UNSHIPPED_NOTES):
                offenders.append(f"{relative}:{lineno}: {line.strip()}")
    assert not offenders, ("cite the project's own docs/ pages (see docs/README.md) instead of notes that do not "
                           "ship:\n" + "\n".join(offenders))


def test_every_cited_docs_page_exists():
    missing = []
    for path in shipped_files():
        if (text := read_text(path)) is None:
            continue
        for cited in sorted(set(DOCS_CITATION.findall(text))):
            if not (ROOT / cited).is_file():
                missing.append(f"{path.relative_to(ROOT)} cites {cited}")
    assert not missing, "cited docs pages that do not exist:\n" + "\n".join(missing)
    assert (ROOT / "docs" / "README.md").is_file()


def test_docs_pages_link_to_existing_pages():
    broken = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).is_file():
                broken.append(f"{page.relative_to(ROOT)} links to {target}")
    assert not broken, "broken links between docs pages:\n" + "\n".join(broken)
