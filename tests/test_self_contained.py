"""The repository is self-contained: no tracked file refers to a path outside it (a folder beside
the checkout, a developer machine's absolute path, documents that live only there)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.helpers import ROOT

# Built from pieces so that this file does not match its own patterns.
_SHARED = "sha" + "red"
_OUTSIDE = [
    # the sibling folder by a relative path (either slash), and its contents named from anywhere
    re.compile(re.escape("..") + r"[/\\]+" + _SHARED + r"\b"),
    re.compile(_SHARED + r"/(?:reference|CONTRACT|STYLE|hooks)\b"),
    # pathlib spellings: the root's parent joined with the folder's name, either quote
    re.compile(r"parent\s*/\s*[\"']" + _SHARED + r"[\"']"),
    re.compile(r"[\"']" + _SHARED + r"[\"']\s*/\s*[\"'](?:reference|CONTRACT\.md)[\"']"),
    # absolute paths of the development machines
    re.compile(r"(?<![\w.~-])/" + "wo" + r"rk/"),
]
# Documents that exist only outside the repository: named anywhere, they are dangling references
# (unless a file of that name is added to the repository).
_OUTSIDE_DOCUMENTS = ["CONTRACT" + ".md", "DATASOURCES" + ".md", "STYLE" + ".md"]
_SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def tracked_files() -> list[Path]:
    """`git ls-files`; outside a git checkout (an unpacked archive), every file under the root."""
    if (ROOT / ".git").exists():
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"],
            capture_output=True,
            check=True,
        ).stdout
        return [ROOT / name for name in out.decode().split("\0") if name]
    files = []
    for directory, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        files += [Path(directory) / name for name in names]
    return files


def outside_references(text: str, present: set[str]) -> list[str]:
    """Each match of a reference to something outside the repository, with its line number."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        hits = [m.group(0) for pattern in _OUTSIDE for m in pattern.finditer(line)]
        hits += [name for name in _OUTSIDE_DOCUMENTS if name in line and name not in present]
        found += [f"line {number}: {hit!r}" for hit in hits]
    return found


def test_the_patterns_catch_outside_references() -> None:
    """The scanner itself: each spelling that broke a fresh clone is caught, ordinary text is not."""
    bad = [
        'REFERENCE = ROOT.parent / "' + _SHARED + '" / "reference"',
        "Alert semantics: ../" + _SHARED + "/" + "CONTRACT" + ".md §4.",
        "see " + _SHARED + "/reference/junit",
        "cd /" + "work/main && make test",
        "(see DATASOURCES" + ".md §3)",
    ]
    for line in bad:
        assert outside_references(line, set()), line
    good = [
        "layers shared between images are counted once",
        "HOME='/home/runner/" + "work/_temp/x'",
        "https://example.com/" + "work/item",
        "tests/fixtures/buildkit-logs",
    ]
    for line in good:
        assert not outside_references(line, set()), line


def test_no_tracked_file_refers_outside_the_repository() -> None:
    files = tracked_files()
    assert len(files) > 50, "expected the project's files"
    present = {path.name for path in files}
    offenders = []
    for path in files:
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        offenders += [
            f"{path.relative_to(ROOT)} {hit}" for hit in outside_references(text, present)
        ]
    assert offenders == [], "\n".join(offenders)
