"""MkDocs hooks (mkdocs.yml `hooks:`): the home page is the README itself, one source for both,
and formulas written as TeX between dollar signs are rendered to MathML when the site is built,
so they read right in any current browser, offline, without JavaScript."""

from __future__ import annotations

import re
from pathlib import Path

from latex2mathml.converter import convert

# code is never touched: fenced blocks and inline code spans are kept as they are
CODE = re.compile(r"(^```.*?^```[ \t]*$|`[^`\n]+`)", re.S | re.M)
BLOCK = re.compile(r"^\$\$[ \t]*\n(.+?)\n\$\$[ \t]*$", re.S | re.M)
INLINE = re.compile(r"(?<![\\$\w])\$(?=\S)([^$\n]+?)(?<=\S)\$(?![\w$])")


def on_page_read_source(page, config):
    """docs/index.md is the README, its links made relative to docs/."""
    if page.file.src_uri != "index.md":
        return None
    readme = Path(config.config_file_path).parent / "README.md"
    return readme.read_text().replace("](docs/", "](")


def math(markdown: str) -> str:
    """$…$ and $$…$$ (outside code) → MathML."""
    parts = CODE.split(markdown)
    for i in range(0, len(parts), 2):
        text = BLOCK.sub(lambda m: convert(m.group(1).strip(), display="block"), parts[i])
        parts[i] = INLINE.sub(lambda m: convert(m.group(1)), text)
    return "".join(parts)


def on_page_markdown(markdown, page, config, files):
    return math(markdown)
