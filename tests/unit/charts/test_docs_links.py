"""Relative links in the docs this area owns point at files that exist."""

from __future__ import annotations

import re

import pytest

from conftest import CHART, REPO

OWNED = ["README.md", "architecture.md", "install.md", "placement.md", "quantization.md", "troubleshooting.md"]
_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def _links(page):
    return [m.group(1) for m in _LINK.finditer(page.read_text()) if "://" not in m.group(1)]


@pytest.mark.parametrize("page", OWNED + [CHART / "README.md"])
def test_relative_links_resolve(page):
    path = page if not isinstance(page, str) else REPO / "docs" / page
    broken = [link for link in _links(path) if not (path.parent / link).exists()]
    assert broken == [], f"{path.relative_to(REPO)} links to missing files: {broken}"


def test_index_lists_every_page():
    index = (REPO / "docs" / "README.md").read_text()
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md") if p.name != "README.md")
    assert [p for p in pages if f"({p})" not in index] == []
