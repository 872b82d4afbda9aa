"""The front page and the docs: short, linked, citable, and their code runs."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_front_page_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"


def test_relative_links_point_to_files_that_exist():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_citation_and_license():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    paper = cff["preferred-citation"]
    assert paper["title"] == "Elastic Neural Networks for Classification"
    assert [a["family-names"] for a in paper["authors"]] == ["Zhou", "Bai", "Bhattacharyya", "Huttunen"]
    assert "MIT License" in (ROOT / "LICENSE").read_text()


def test_the_front_page_example_runs():
    """The README's Python example, as a user would paste it."""
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) == 5
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("14 outputs: ['exit_conv_pw_1_relu_softmax'") and "final_softmax" in proc.stdout


def test_the_package_map_names_every_module():
    """docs/architecture.md's package block lists every module of elastic_lib under its package."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```")[1]  # the first fenced block: the package map
    sections, current = {}, None
    for line in block.splitlines():
        m = re.match(r"  (\S+?)(/|\.py)\s", line)
        if m:
            current = m.group(1).split("/")[0]
        if current:
            sections[current] = sections.get(current, "") + " " + line
    missing = []
    for path in sorted((ROOT / "elastic_lib").rglob("*.py")):
        rel = path.relative_to(ROOT / "elastic_lib")
        if rel.name == "__init__.py" or len(rel.parts) == 1:
            continue
        top, stem = rel.parts[0], rel.stem
        if not re.search(rf"\b{re.escape(stem)}\b", sections.get(top, "")):
            missing.append(str(rel))
    assert not missing, f"docs/architecture.md's package map leaves out: {missing}"
