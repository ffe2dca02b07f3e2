"""Every method / format reference in the code resolves to a section of a file shipped with the repository."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", ".venv-p3d", ".git", "data", "checkpoint", "MANO", "__pycache__"}


def _sources() -> list[Path]:
    files = []
    for path in REPO.rglob("*"):
        if path.suffix in (".py", ".md") and not SKIP_DIRS & set(path.relative_to(REPO).parts):
            files.append(path)
    return files


def _sections(doc: Path) -> set[str]:
    """Section numbers of the numbered headings (``## 3.`` / ``### 2.4``) of a markdown file."""
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)?)\.? ", doc.read_text(), flags=re.M))


def test_docs_exist_with_their_sections():
    for name in ("method.md", "formats.md", "DEVIATIONS.md"):
        assert (REPO / "docs" / name).is_file(), name
    assert {"1", "2.3", "4.2", "6", "9", "14"} <= _sections(REPO / "docs" / "method.md")
    headings = set(re.findall(r"^## (.+)$", (REPO / "docs" / "DEVIATIONS.md").read_text(), flags=re.M))
    assert {"Data and crops", "Synthetic generation", "MANO model", "Network", "Losses", "Trainer",
            "Consis-CycleGAN", "Distributed/resume", "Datasets ICVL/MSRA", "Input validation"} <= headings


def test_every_section_reference_resolves():
    sections = {doc: _sections(REPO / "docs" / doc) for doc in ("method.md", "formats.md")}
    deviation_areas = set(re.findall(r"^## (.+)$", (REPO / "docs" / "DEVIATIONS.md").read_text(), flags=re.M))
    bad = []
    for path in _sources():
        text = path.read_text(encoding="utf-8", errors="replace")
        where = path.relative_to(REPO)
        if re.search("dsf" + r"-method|(?<!docs/)formats\.md §", text):
            bad.append(f"{where}: cites the private specification (use docs/method.md / docs/formats.md)")
        for doc, refs in re.findall(r"docs/(method|formats)\.md ((?:§[\d.]+(?:-[\d.]+)?(?:, )?)+)", text):
            for ref in re.findall(r"§(\d+(?:\.\d+)?)", refs):
                if ref not in sections[f"{doc}.md"]:
                    bad.append(f"{where}: docs/{doc}.md §{ref} does not exist")
        for area in re.findall(r'DEVIATIONS(?:\.md)?,? "([^"]+)"', text):
            area = " ".join(area.replace("#", " ").split())  # a reference may wrap over comment lines
            if area not in deviation_areas:
                bad.append(f'{where}: DEVIATIONS.md has no area "{area}"')
    assert not bad, "\n".join(bad)
