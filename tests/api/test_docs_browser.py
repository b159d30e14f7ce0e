"""The API's Swagger UI page and browsable API in Chromium (Debian's, via Playwright)."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]


@pytest.fixture
def page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.set_default_timeout(20_000)
        yield page
        browser.close()


def test_swagger_ui_renders_every_operation_from_local_files(page, live_server):
    outside = []
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith(live_server.url) else outside.append(request.url)
        ),
    )
    page.goto(live_server.url + "/api/docs/")
    page.wait_for_selector(".opblock")
    page.wait_for_function("document.querySelectorAll('.opblock').length >= 11")
    assert "/api/workflows/{workflow_id}/steps/success/" in page.inner_text("body")
    assert outside == []


def test_browsable_api_for_a_logged_in_superuser(page, live_server, admin_user):
    page.goto(live_server.url + "/admin/login/?next=/api/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_url(live_server.url + "/api/")
    assert "Django REST framework" in page.title()
    page.click("text=/api/workflow-executions/")
    page.wait_for_selector("text=Filters")
