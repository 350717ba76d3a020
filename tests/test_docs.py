"""The documentation: a short README whose links resolve, and the MkDocs site in docs/ built
with --strict (a broken link, a missing page or a bad API reference fails it)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    # the two set-up commands, and the test command .ci/run calls
    assert "kr run" in text and "python -m pytest -q" in text
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()


def test_every_page_is_in_the_nav_and_the_site_builds_strictly(tmp_path):
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f" {page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "stage_graph" in api and "BACKENDS" in api  # pages generated from docstrings
