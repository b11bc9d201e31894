"""The domain is pure: it imports nothing from the outer layers, drivers or frameworks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "domain"
FORBIDDEN = {
    "application", "projections", "interfaces",  # outer layers
    "fastapi", "starlette", "uvicorn", "pydantic", "pydantic_settings", "typer",  # frameworks
    "psycopg", "psycopg2", "psycopg_pool", "sqlite3", "sqlalchemy", "httpx", "requests",  # I/O
    "socket", "urllib", "aiohttp", "asyncio", "threading", "subprocess",
    "eventsourcing.postgres", "eventsourcing.sqlite", "eventsourcing.application",
}  # fmt: skip
FILES = sorted(DOMAIN.rglob("*.py"))


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: stays inside domain
                continue
            found.append(node.module or "")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and getattr(node.func, "id", getattr(node.func, "attr", None))
            in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append(str(node.args[0].value))
    return found


def is_forbidden(module: str) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN)


def test_domain_has_files_to_check():
    names = {p.name for p in FILES}
    assert {"accounts.py", "payments.py", "ledger.py", "posting.py", "money.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_domain_module_imports_only_pure_things(path):
    bad = [m for m in imported_modules(path) if is_forbidden(m)]
    assert bad == [], f"{path.relative_to(DOMAIN.parent)} imports {bad}"


def test_the_checker_catches_forbidden_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import sqlite3\nfrom application.service import Payledger\n"
        "from fastapi import FastAPI\nimport psycopg.rows\nimport importlib\n"
        "importlib.import_module('httpx')\nfrom . import money\nfrom domain.ledger import Leg\n"
    )
    bad = [m for m in imported_modules(sample) if is_forbidden(m)]
    assert bad == ["sqlite3", "application.service", "fastapi", "psycopg.rows", "httpx"]
