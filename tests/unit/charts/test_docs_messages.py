"""docs/troubleshooting.md quotes the CRD's validation messages; fail when one no longer exists."""

from __future__ import annotations

import re

import yaml

from conftest import REPO

DOC = REPO / "docs" / "troubleshooting.md"
CRD = REPO / "crds" / "serving.fms.dev_foundationmodelservices.yaml"


def _crd_messages() -> list[str]:
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations", []):
                found.append(rule.get("message") or rule.get("messageExpression", ""))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(CRD.read_text()))
    return found


def _cel_table_rows() -> list[str]:
    """First-column messages of the table under 'Rules across fields (CEL)'."""
    section = DOC.read_text().split("Rules across fields (CEL)", 1)[1].split("\n\n", 2)[1]
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", section, re.M)]


def test_every_quoted_cel_message_is_in_the_crd():
    messages = _crd_messages()
    rows = _cel_table_rows()
    assert len(rows) >= 10
    for row in rows:
        # <placeholders> stand for the part a messageExpression fills in.
        pieces = [p.strip() for p in re.split(r"<[a-z]+>", row) if p.strip()]
        assert any(all(p in m for p in pieces) for m in messages), f"troubleshooting.md quotes a message the CRD no longer has: {row}"


def test_every_crd_message_is_documented():
    rows = _cel_table_rows()
    for message in _crd_messages():
        fixed = [p.strip() for p in re.split(r"'\s*\+\s*self\.[\w.]+\s*\+\s*'|^'|'$|^self\.[\w.]+\s*\+\s*'", message) if p.strip()]
        assert any(all(p in row for p in fixed) for row in rows), f"docs/troubleshooting.md has no row for: {message}"
