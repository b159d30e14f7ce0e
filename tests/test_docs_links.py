"""Every internal link of README.md and docs/, every route they document and every
admin button they name exists."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.urls import Resolver404, resolve

from .support import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`")
LOCAL_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost)(?::\d+)?(/[^\s)`'\">]*)")
BUTTON = re.compile(r"\*([A-Z][A-Za-z ]+)\*(?:\s+and\s+\*([A-Z][A-Za-z ]+)\*)?\s+buttons?")
ADMIN_SOURCES = [
    *(REPO_ROOT / "workflows_app").rglob("admin*.py"),
    *(REPO_ROOT / "workflows_app" / "admin").rglob("*.py"),
    *(REPO_ROOT / "workflows_app" / "templates" / "admin").rglob("*.html"),
]


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO_ROOT))


def without_code_blocks(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", without_code_blocks(page.read_text()), re.MULTILINE)
    return {slug(heading) for heading in headings}


def concrete(path: str) -> str:
    """A documented path with its placeholders replaced by sample values."""
    path = urlsplit(path).path
    path = re.sub(r"\{[^}]+\}", "sample", path)
    return path.replace("wf_exec_01J...", "wf_exec_sample")


def test_the_checks_see_every_page():
    assert {page.name for page in PAGES} >= {"README.md", "install.md", "api.md", "admin.md"}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_internal_links_and_anchors_exist(page):
    missing = []
    for target in LINK.findall(without_code_blocks(page.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        ):
            missing.append(target)
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_documented_routes_resolve_with_their_method(page):
    text = page.read_text()
    wrong = []
    for method, path in ROUTE.findall(text):
        try:
            match = resolve(concrete(path))
        except Resolver404:
            wrong.append(f"{method} {path}: no such route")
            continue
        actions = getattr(match.func, "actions", None)
        if actions is not None:
            allowed = method.lower() in actions
        else:
            allowed = hasattr(match.func.view_class, method.lower())
        if not allowed:
            wrong.append(f"{method} {path}: method not allowed")
    for path in LOCAL_URL.findall(text):
        try:
            resolve(concrete(path))
        except Resolver404:
            wrong.append(f"{path}: no such route")
    assert wrong == []


def test_named_admin_buttons_exist():
    sources = "\n".join(path.read_text() for path in ADMIN_SOURCES)
    named = {
        name for page in PAGES for pair in BUTTON.findall(page.read_text()) for name in pair if name
    }
    assert named, "the docs name admin buttons; the pattern found none"
    assert {name for name in named if f'"{name}"' not in sources} == set()


def test_a_wrong_route_and_a_wrong_button_would_be_caught():
    with pytest.raises(Resolver404):
        resolve(concrete("/api/workflow-executions/steps/success"))
    assert BUTTON.findall("the admin's *Complete step*\nbutton") == [("Complete step", "")]
