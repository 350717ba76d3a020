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


def _built_site(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ,
                                                                         "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp_path / "site"


def test_the_site_reads_right_in_a_browser(tmp_path):
    """Every table row has as many cells as its header (a `|` inside a formula once cut a row),
    formulas are MathML and no raw TeX is left in the text, and the home page is the README."""
    from html.parser import HTMLParser

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.depth, self.code, self.text, self.math = [], 0, 0, [], 0

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.depth += 1
                self.tables.append([])
            elif tag == "tr" and self.depth:
                self.tables[-1].append(0)
            elif tag in ("td", "th") and self.depth:
                self.tables[-1][-1] += 1
            elif tag in ("code", "pre", "math"):
                self.code += 1
                self.math += tag == "math"

        def handle_endtag(self, tag):
            if tag == "table":
                self.depth -= 1
            elif tag in ("code", "pre", "math"):
                self.code -= 1

        def handle_data(self, data):
            if not self.code:
                self.text.append(data)

    site = _built_site(tmp_path)
    maths = 0
    for html in site.rglob("*.html"):
        page = Page()
        page.feed(html.read_text())
        for table in page.tables:
            assert len(set(table)) <= 1, f"{html.relative_to(site)}: rows with {sorted(set(table))} cells"
        text = "".join(page.text)
        for tex in ("_{", "^{", "\\frac", "$$", "\\varepsilon"):
            assert tex not in text, f"{html.relative_to(site)}: raw TeX {tex!r}"
        maths += page.math
    assert maths >= 5
    home = (site / "index.html").read_text()
    readme_title = (ROOT / "README.md").read_text().splitlines()[0].lstrip("# ")
    assert readme_title in home and "Quick start" in home


def _commands(text: str):
    """`kr …` command lines in code blocks and code spans."""
    import shlex

    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S) + re.findall(r"`(kr [^`]+)`", text)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip().split("&&")[-1].strip()
            if line.startswith("kr "):
                try:
                    yield shlex.split(line.replace("…", "").rstrip("&").strip())
                except ValueError:
                    continue


def test_the_commands_the_docs_give_exist():
    """Every `kr` subcommand, flag and `--set` key that the README and the docs name exists."""
    import click

    from kr.cli import cli
    from kr.config import load_config
    from kr.errors import ConfigError

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked = 0
    for page in pages:
        for argv in _commands(page.read_text()):
            if len(argv) < 2 or argv[1][0].isdigit():
                continue  # a results table's `kr` row, not a command
            command, rest = cli, argv[1:]
            top = {o: p for p in cli.params for o in p.opts}
            while rest and rest[0] in top:  # the group's own options: kr --threads N run …
                rest = rest[1 + (not top[rest[0]].is_flag):]
            if not rest:
                continue
            while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
                sub = command.commands.get(rest[0])
                if sub is None:
                    break
                command, rest = sub, rest[1:]
            assert command is not cli, f"{page.name}: unknown command in {' '.join(argv)}"
            flags = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
            flags |= {o for p in cli.params for o in p.opts}
            for i, token in enumerate(rest):
                if token.startswith("--"):
                    assert token.split("=")[0] in flags, f"{page.name}: {' '.join(argv)}: no option {token}"
                    if token == "--set" and i + 1 < len(rest) and "=" in rest[i + 1]:
                        key = rest[i + 1]
                        if key.split("=")[0].isupper() or "<" in key:
                            continue  # a placeholder such as KEY=VALUE
                        try:
                            load_config("cpu", overrides=[key])
                        except ConfigError as exc:
                            assert "unknown config key" not in str(exc), f"{page.name}: {key}: {exc}"
                    checked += 1
    assert checked > 30


def test_the_citation_file_is_valid_and_agrees_with_the_readme():
    import tomllib

    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["authors"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert cff["version"] == version
    readme = (ROOT / "README.md").read_text()
    assert cff["preferred-citation"]["title"].split(":")[0] in readme.replace("\n             ", " ")
    assert f"version = {{{version}}}" in readme


# Pages for contributors, not users: they may be long and carry the project's history.
CONTRIBUTOR_PAGES = {"history.md", "architecture.md", "api.md", "benchmarks.md"}


def test_user_pages_are_short_enough_to_read_in_one_sitting():
    """No user page is over 1,500 words (the reference splits into pages before it grows past it)."""
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name not in CONTRIBUTOR_PAGES:
            words = len(page.read_text().split())
            assert words <= 1500, f"docs/{page.name}: {words} words; split it or move history to docs/history.md"
