"""The admin in a real browser: Debian's Chromium driven by Playwright (from PyPI).

Never run ``playwright install``: the browser is /usr/bin/chromium. Screenshots are
saved under ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse

from workflows_app.models import StepExecution, WorkflowExecution

from . import workflows_for_tests as wf
from .conftest import run_stored

# Playwright's sync API runs an event loop in this thread; the ORM calls of the test
# itself are still synchronous and safe.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server, admin_user):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)  # a safety cap: the machine may be loaded
    page.goto(live_server.url + reverse("admin:login"))
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_url(live_server.url + reverse("admin:index"))
    # Collapse the admin's navigation sidebar (its state lives in localStorage): the
    # full-page screenshots are cleaner without the sticky column.
    page.evaluate("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    yield page
    context.close()


def shot(page, name: str, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page, timeout=60_000)


def age(execution: WorkflowExecution, hours: float) -> None:
    """Move an execution and its attempts back in time (test data for a long-running run)."""
    delta = timedelta(hours=hours)
    execution.refresh_from_db()
    WorkflowExecution.objects.filter(pk=execution.pk).update(
        created_at=execution.created_at - delta, started_at=execution.started_at - delta
    )
    for step in StepExecution.objects.filter(execution=execution):
        StepExecution.objects.filter(pk=step.pk).update(
            started_at=step.started_at - delta + timedelta(seconds=step.pk % 5),
            ended_at=step.ended_at - delta + timedelta(seconds=step.pk % 5),
        )


def test_list_filter_and_failed_execution(page, live_server):
    run_stored(wf.OK, {"ref": "a1", "secret": "s3cr3t"})
    run_stored(wf.REVERTED, {"ref": "b2"})
    failed = run_stored(wf.FAILED, {"ref": "c3", "card_number": "4111111111111111"})
    run_stored(wf.WAITING, {"ref": "d4"})

    page.click("text=Workflows")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 4
    assert page.locator(".wf-badge.wf-red").count() == 2
    shot(page, "list.png")

    # Filter by state through the sidebar.
    page.locator("#changelist-filter a", has_text="Failed").first.click()
    page.wait_for_url("**state__exact=failed**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert failed.transaction_id in rows.first.inner_text()

    # Open it: the graph has a red failed node; the history shows the error.
    rows.first.locator("a", has_text=failed.transaction_id).click()
    page.wait_for_selector("svg.wf-graph")
    failed_node = page.locator('svg.wf-graph g.wf-node[data-state="failed"]').first
    assert failed_node.get_attribute("data-colour") == "red"
    assert failed_node.locator("rect").first.get_attribute("stroke") == "#dc2626"
    assert page.locator("svg.wf-gantt .wf-bar-compensate").count() >= 1
    history = page.locator("#history")
    assert "card declined by the bank" in history.inner_text()
    assert "refund service unavailable" in history.inner_text()
    assert "4111111111111111" not in page.content()
    assert page.locator('input[name="_save"]').count() == 0
    # Clicking a node jumps to its history entry.
    page.locator('svg.wf-graph a[href="#step-admin-tests-charge-declined"]').click()
    page.wait_for_url("**#step-admin-tests-charge-declined")
    shot(page.locator("body").page, "detail-failed.png")


def test_complete_a_waiting_step_through_the_form(page, live_server):
    waiting = run_stored(wf.WAITING, {"ref": "long-1", "order": {"id": 7, "lines": 3}})
    age(waiting, hours=26)

    page.goto(live_server.url + reverse("admin:workflows_app_workflowexecution_changelist"))
    page.locator("#result_list a", has_text=waiting.transaction_id).click()
    page.wait_for_selector("#waiting")
    assert page.locator(".wf-heading .wf-badge").inner_text().strip() == "Invoking"
    assert "so far" in page.locator("#general").inner_text()
    shot(page, "detail-waiting.png")

    page.fill("#waiting textarea[name=response]", '{"approved_by": "ops"}')
    page.click("#waiting button[value=success]")
    page.wait_for_selector(".messagelist .success")
    assert "approve marked succeeded" in page.locator(".messagelist").inner_text()
    assert page.locator(".wf-heading .wf-badge").inner_text().strip() == "Done"
    assert page.locator("#waiting").count() == 0
    assert "3 of 3 steps" in page.locator("#general").inner_text()


def test_invalid_json_in_the_step_form_shows_an_error(page, live_server):
    waiting = run_stored(wf.WAITING, {"ref": "bad-json"})

    page.goto(
        live_server.url + reverse("admin:workflows_app_workflowexecution_change", args=[waiting.pk])
    )
    page.fill("#waiting textarea[name=response]", "{not json")
    page.click("#waiting button[value=success]")
    page.wait_for_selector(".errorlist")
    assert "Enter a valid JSON." in page.locator(".errorlist").inner_text()
    assert page.locator("textarea[name=response]").input_value() == "{not json"


def test_run_a_workflow_from_the_definitions_page(page, live_server):
    page.click("text=Workflow definitions")
    page.wait_for_selector(f"#workflow-{wf.OK}")
    section = page.locator(f"#workflow-{wf.OK}")
    assert section.locator("svg.wf-graph:visible g.wf-node").count() == 3
    # Every workflow the whole suite registered is on this page: capture the viewport.
    section.scroll_into_view_if_needed()
    shot(page, "definitions.png", full_page=False)

    section.locator("textarea[name=input]").fill('{"ref": "from-the-browser"}')
    section.locator("button", has_text=f"Run {wf.OK}").click()
    page.wait_for_url("**/change/")
    execution = WorkflowExecution.objects.get(workflow_id=wf.OK)
    assert page.url.endswith(
        reverse("admin:workflows_app_workflowexecution_change", args=[execution.pk])
    )
    assert page.locator(".wf-heading .wf-badge").inner_text().strip() == "Done"
    assert "from-the-browser" in page.locator("#payload").inner_text()


# Graph layout: every graph fits its box at 1440 and 800 px, for the demo's workflows
# and a generated 30-step chain.

FIT_SCRIPT = """() => Array.from(document.querySelectorAll('.wf-canvas'))
  .filter((canvas) => canvas.querySelector('svg.wf-graph'))
  .map((canvas) => {
    const shown = Array.from(canvas.querySelectorAll('svg.wf-graph'))
      .filter((svg) => getComputedStyle(svg).display !== 'none');
    const box = canvas.getBoundingClientRect();
    return shown.map((svg) => {
      const r = svg.getBoundingClientRect();
      return {
        title: svg.querySelector('title').textContent,
        layout: svg.getAttribute('data-layout') || 'single',
        overflow: canvas.scrollWidth - canvas.clientWidth,
        left: r.left - box.left,
        right: box.right - r.right,
        scale: r.width / svg.width.baseVal.value,
        nodes: svg.querySelectorAll('g.wf-node').length,
        visibleHeight: r.height,
      };
    });
  })"""


# The innermost elements that reach past the right edge of the page (diagnostics).
WIDER_THAN_PAGE = """() => Array.from(document.querySelectorAll('body *'))
  .filter((el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
  .filter((el) => !Array.from(el.children).some(
    (c) => c.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5))
  .map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`)"""


def graph_boxes(page) -> list[list[dict]]:
    return page.evaluate(FIT_SCRIPT)


def assert_graphs_fit(page, expected: set[str]) -> dict[str, dict]:
    """Exactly one drawing per graph is shown, inside its box; returns them by title."""
    seen: dict[str, dict] = {}
    for shown in graph_boxes(page):
        assert len(shown) == 1, shown
        box = shown[0]
        assert box["overflow"] <= 0, box
        assert box["left"] >= -0.5 and box["right"] >= -0.5, box
        seen[box["title"]] = box
    assert expected <= set(seen), (expected, set(seen))
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, "\n".join(page.evaluate(WIDER_THAN_PAGE))
    return seen


DEMO_WORKFLOWS = {"create-order", "accept-quote", "notify-users", "hello-workflow"}


@pytest.mark.parametrize("width", [1440, 800])
def test_graphs_fit_the_definitions_page(page, live_server, width):
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(live_server.url + reverse("admin:workflows_app_workflowdefinitionentry_changelist"))
    page.wait_for_selector("svg.wf-graph", state="attached")
    seen = assert_graphs_fit(page, DEMO_WORKFLOWS | {wf.LONG})
    long = seen[wf.LONG]
    assert long["nodes"] == wf.LONG_STEPS
    assert long["layout"] == ("wide" if width == 1440 else "narrow")
    # Readable: the 30 steps are drawn at (nearly) their natural size.
    assert long["scale"] >= 0.9, long
    assert seen["create-order"]["scale"] >= 0.9
    page.locator(f"#workflow-{wf.LONG}").scroll_into_view_if_needed()
    shot(page, f"definitions-long-{width}.png", full_page=False)


@pytest.mark.parametrize("width", [1440, 800])
def test_graphs_fit_the_detail_pages(page, live_server, width):
    from django.core.management import call_command

    call_command("run_examples", stdout=open(os.devnull, "w"))  # noqa: SIM115
    long = run_stored(wf.LONG, {"ref": "long"})
    page.set_viewport_size({"width": width, "height": 900})
    executions = {e.workflow_id: e for e in WorkflowExecution.objects.all()}
    assert DEMO_WORKFLOWS - {"hello-workflow"} <= set(executions)
    for name, execution in executions.items():
        page.goto(
            live_server.url
            + reverse("admin:workflows_app_workflowexecution_change", args=[execution.pk])
        )
        page.wait_for_selector("svg.wf-graph", state="attached")
        box = assert_graphs_fit(page, {name})[name]
        assert box["scale"] >= 0.9, box
        if name in ("create-order", wf.LONG):
            shot(page, f"detail-{name}-{width}.png", full_page=False)
    assert long.state == "done"


# Live detail page, confirmation pages, the waiting filter.


def test_a_running_execution_updates_by_itself_when_its_step_is_answered(page, live_server):
    from workflows_app.engine import workflow_engine

    waiting = run_stored(wf.WAITING, {"ref": "live"})
    page.goto(
        live_server.url + reverse("admin:workflows_app_workflowexecution_change", args=[waiting.pk])
    )
    page.wait_for_selector('#wf-live-status[data-live="on"]')
    assert page.locator(".wf-heading .wf-badge").inner_text().strip() == "Invoking"
    assert page.locator("#waiting").count() == 1
    # A marker that a reload would lose.
    page.evaluate("window.wfNotReloaded = true")

    # Another client answers the step (the engine, as the API or a worker would).
    workflow_engine.set_step_success(
        workflow_id=waiting.workflow_id,
        transaction_id=waiting.transaction_id,
        step_id="approve",
        response={"approved_by": "someone else"},
    )

    page.wait_for_function(
        "() => document.querySelector('.wf-heading .wf-badge').textContent.trim() === 'Done'",
        timeout=20_000,
    )
    page.wait_for_selector('#wf-live-status[data-live="stopped"]', timeout=20_000)
    assert page.evaluate("window.wfNotReloaded") is True
    assert page.locator("#waiting").count() == 0
    assert "3 of 3 steps" in page.locator("#general").inner_text()
    assert page.locator('svg.wf-graph:visible g.wf-node[data-state="done"]').count() == 3
    assert "someone else" in page.locator("#history").text_content()
    shot(page, "detail-live-finished.png", full_page=False)


@pytest.mark.parametrize("width", [1440, 800])
def test_each_destructive_command_asks_first(page, live_server, width):
    page.set_viewport_size({"width": width, "height": 900})
    done = run_stored(wf.OK, {"ref": f"confirm-{width}"})
    failed = run_stored(wf.FAILED, {"ref": f"confirm-{width}"})
    waiting = run_stored(wf.WAITING, {"ref": f"confirm-{width}"})

    def detail(execution):
        page.goto(
            live_server.url
            + reverse("admin:workflows_app_workflowexecution_change", args=[execution.pk])
        )

    def state(execution):
        return WorkflowExecution.objects.get(pk=execution.pk).state

    # Cancel: the page lists the compensation; going back changes nothing.
    detail(done)
    page.locator(".object-tools a", has_text="Cancel").click()
    page.wait_for_selector("h1:has-text('Are you sure?')")
    assert "admin-tests-reserve" in page.locator("ol.wf-compensation-order").inner_text()
    shot(page, f"confirm-cancel-{width}.png")
    page.locator("a.cancel-link").click()
    page.wait_for_url("**/change/")
    assert state(done) == "done"
    page.locator(".object-tools a", has_text="Cancel").click()
    page.locator("input.wf-confirm-button").click()
    page.wait_for_selector(".messagelist .success")
    assert state(done) == "reverted"

    # Retry compensation.
    detail(failed)
    page.locator(".object-tools a", has_text="Retry compensation").click()
    page.wait_for_selector("h1:has-text('Are you sure?')")
    assert "admin-tests-reserve-flaky" in page.locator("ol.wf-compensation-order").inner_text()
    page.locator("input.wf-confirm-button").click()
    page.wait_for_selector(".messagelist .success")
    assert state(failed) == "reverted"

    # Run again.
    detail(done)
    page.locator(".object-tools a", has_text="Run again").click()
    page.wait_for_selector("h1:has-text('Are you sure?')")
    assert WorkflowExecution.objects.filter(workflow_id=wf.OK).count() == 1
    page.locator("input.wf-confirm-button").click()
    page.wait_for_selector(".messagelist .success")
    assert WorkflowExecution.objects.filter(workflow_id=wf.OK).count() == 2

    # Mark failed: the confirmation page holds the error field.
    detail(waiting)
    page.locator("#waiting a.wf-mark-failed").click()
    page.wait_for_selector("h1:has-text('Are you sure?')")
    assert state(waiting) == "invoking"
    page.fill("textarea[name=response]", '{"message": "rejected by ops"}')
    page.check("input[name=force_permanent_failure]")
    shot(page, f"confirm-mark-failed-{width}.png")
    page.locator("input.wf-confirm-button").click()
    page.wait_for_selector(".messagelist .success")
    assert state(waiting) == "reverted"


def test_waiting_filter_lists_what_needs_attention(page, live_server):
    waiting = [run_stored(wf.WAITING, {"ref": f"attention-{i}"}) for i in range(2)]
    run_stored(wf.OK, {"ref": "attention-done"})

    page.goto(live_server.url + reverse("admin:workflows_app_workflowexecution_changelist"))
    link = page.locator("#changelist-filter a", has_text="Waiting for a response")
    assert link.inner_text().strip() == "Waiting for a response (2)"
    link.click()
    page.wait_for_url("**waiting=true**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    text = page.locator("#result_list").inner_text()
    assert all(w.transaction_id in text for w in waiting)
    shot(page, "list-waiting.png")


def test_the_list_reads_right_at_800_px(page, live_server):
    run_stored(wf.OK, {"ref": "narrow"})
    run_stored(wf.REVERTED, {"ref": "narrow"})
    page.set_viewport_size({"width": 800, "height": 900})
    page.goto(live_server.url + reverse("admin:workflows_app_workflowexecution_changelist"))
    page.wait_for_selector("#result_list")

    assert page.locator("#content h1").inner_text().strip() == "Workflows"
    assert "2 runs" in page.locator(".paginator").inner_text()
    # Each row still shows its transaction, workflow, state and progress, inside the
    # list's box (not scrolled away).
    # The box of the list itself: Django 6's markup gives ``.results`` no box of its own.
    results = page.locator("#changelist").bounding_box()
    assert results["width"] > 0
    assert results["x"] + results["width"] <= 800
    for column in ("transaction_id", "workflow_id", "state_display", "progress_display"):
        cell = page.locator(
            f"#result_list tbody tr td.field-{column}, #result_list tbody tr th.field-{column}"
        ).first
        box = cell.bounding_box()
        assert box is not None and box["width"] > 30, column
        assert box["x"] + box["width"] <= results["x"] + results["width"] + 0.5, column
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    shot(page, "list-800.png")


def test_graph_colours_follow_the_dark_theme(page, live_server):
    done = run_stored(wf.OK, {"ref": "dark"})
    page.emulate_media(color_scheme="dark")
    page.goto(
        live_server.url + reverse("admin:workflows_app_workflowexecution_change", args=[done.pk])
    )
    page.wait_for_selector("svg.wf-graph", state="attached")

    colours = page.evaluate(
        """() => {
          const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
          const light = (c) => {
            const [r, g, b] = rgb(c);
            return (r * 299 + g * 587 + b * 114) / 255000;
          };
          const node = document.querySelector('svg.wf-graph g.wf-node');
          return {
            body: light(getComputedStyle(document.body).backgroundColor),
            box: light(getComputedStyle(node.querySelector('rect.wf-box')).fill),
            label: light(getComputedStyle(node.querySelector('text.wf-label')).fill),
          };
        }"""
    )
    assert colours["body"] < 0.2, colours
    # The node boxes are dark too, and their labels light: readable on the dark page.
    assert colours["box"] < 0.35, colours
    assert colours["label"] > 0.7, colours
    shot(page, "detail-dark.png", full_page=False)
