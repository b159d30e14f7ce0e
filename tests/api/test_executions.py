"""Stored executions: /api/workflow-executions/... (list, filters, pages, detail, commands)."""

from __future__ import annotations

import datetime
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from workflows_app.models import WorkflowExecution

from .conftest import chain_workflow, failing_compensation_workflow, start, uname, waiting_workflow

pytestmark = pytest.mark.django_db

LIST = "/api/workflow-executions/"


def kept_runs(count: int, **options) -> tuple[str, list[str]]:
    """``count`` finished, kept executions of one new workflow; returns (name, ids)."""
    name = chain_workflow(store=True, retention_time=3600, **options)
    for i in range(count):
        start(name, i, f"{name}-t{i}")
    ids = list(
        WorkflowExecution.objects.filter(workflow_id=name)
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)
    )
    return name, ids


def ids_of(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def test_list_is_newest_first_without_json_columns(staff_client):
    name, ids = kept_runs(3)

    response = staff_client.get(LIST, {"workflow_id": name})

    assert ids_of(response) == ids
    body = response.json()
    assert set(body) == {"next", "previous", "results"}
    item = body["results"][0]
    for heavy in ("execution", "context", "input_payload", "output_payload", "steps_log"):
        assert heavy not in item
    assert item["workflow_id"] == name
    assert item["state"] == "done"
    assert item["status"] == "COMPLETED"


def test_list_query_defers_json_columns_and_does_not_count(staff_client):
    kept_runs(2)

    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(LIST)

    assert response.status_code == 200
    selects = [q["sql"] for q in queries.captured_queries if "workflow_execution" in q["sql"]]
    assert len(selects) == 1
    sql = selects[0].lower()
    assert "count(" not in sql
    assert '"execution"' not in sql.replace('"workflow_execution"', "")
    assert '"context"' not in sql
    assert "limit" in sql


def test_filter_by_workflow_and_transaction(staff_client):
    name, _ = kept_runs(3)

    response = staff_client.get(LIST, {"workflow_id": name, "transaction_id": f"{name}-t1"})

    [item] = response.json()["results"]
    assert item["transaction_id"] == f"{name}-t1"


def test_filter_state_is_repeatable(staff_client):
    done_name, _ = kept_runs(1)
    waiting = waiting_workflow()
    start(waiting, 1, f"{waiting}-w")
    failed, _ = failing_compensation_workflow()
    start(failed, 1, f"{failed}-f")

    both = staff_client.get(LIST, {"state": ["done", "invoking"]})
    only_failed = staff_client.get(LIST, {"state": "failed"})

    states = {item["workflow_id"]: item["state"] for item in both.json()["results"]}
    assert states[done_name] == "done"
    assert states[waiting] == "invoking"
    assert failed not in states
    assert {item["state"] for item in only_failed.json()["results"]} == {"failed"}
    assert failed in {item["workflow_id"] for item in only_failed.json()["results"]}


def test_filter_state_rejects_unknown_values(staff_client):
    response = staff_client.get(LIST, {"state": "exploded"})

    assert response.status_code == 400
    assert response.json()["type"] == "invalid_data"
    assert "state" in response.json()["details"]


def test_filter_created_after_and_before(staff_client):
    name, ids = kept_runs(3)
    base = timezone.now().replace(microsecond=0) - datetime.timedelta(days=10)
    for offset, pk in enumerate(reversed(ids)):  # oldest gets day 0
        WorkflowExecution.objects.filter(pk=pk).update(
            created_at=base + datetime.timedelta(days=offset)
        )

    after = staff_client.get(
        LIST,
        {"workflow_id": name, "created_after": (base + datetime.timedelta(days=1)).isoformat()},
    )
    before = staff_client.get(
        LIST,
        {"workflow_id": name, "created_before": (base + datetime.timedelta(days=1)).isoformat()},
    )
    between = staff_client.get(
        LIST,
        {
            "workflow_id": name,
            "created_after": (base + datetime.timedelta(hours=12)).isoformat(),
            "created_before": (base + datetime.timedelta(days=1, hours=12)).isoformat(),
        },
    )

    assert ids_of(after) == ids[:2]
    assert ids_of(before) == ids[2:]
    assert ids_of(between) == [ids[1]]


def test_filter_created_after_rejects_bad_dates(staff_client):
    response = staff_client.get(LIST, {"created_after": "yesterday-ish"})

    assert response.status_code == 400
    assert "created_after" in response.json()["details"]


def test_q_searches_ids(staff_client):
    name, ids = kept_runs(2)

    by_transaction = staff_client.get(LIST, {"q": f"{name}-t1"})
    by_workflow = staff_client.get(LIST, {"q": name[-10:]})
    by_id = staff_client.get(LIST, {"q": ids[0][-12:]})

    assert [i["transaction_id"] for i in by_transaction.json()["results"]] == [f"{name}-t1"]
    assert ids_of(by_workflow) == ids
    assert ids_of(by_id) == [ids[0]]


def test_cursor_pagination_follows_next_without_overlap(staff_client):
    name, ids = kept_runs(7)
    # Two rows share a created_at: the cursor must still neither skip nor repeat.
    same = WorkflowExecution.objects.get(pk=ids[3]).created_at
    WorkflowExecution.objects.filter(pk=ids[4]).update(created_at=same)
    expected = list(
        WorkflowExecution.objects.filter(workflow_id=name)
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)
    )

    seen: list[str] = []
    url = f"{LIST}?workflow_id={name}&page_size=3"
    pages = 0
    while url:
        response = staff_client.get(url)
        page = ids_of(response)
        assert len(page) <= 3
        seen += page
        url = response.json()["next"]
        pages += 1
        if url:
            query = parse_qs(urlparse(url).query)
            assert query["workflow_id"] == [name]
            assert "cursor" in query

    assert pages == 3
    assert seen == expected
    assert len(set(seen)) == 7


def test_previous_link_goes_back(staff_client):
    name, ids = kept_runs(4)

    first = staff_client.get(LIST, {"workflow_id": name, "page_size": 2})
    second = staff_client.get(first.json()["next"])
    back = staff_client.get(second.json()["previous"])

    assert ids_of(second) == ids[2:]
    assert ids_of(back) == ids[:2]


def test_page_size_is_capped_at_500(staff_client):
    kept_runs(1)

    response = staff_client.get(LIST, {"page_size": 100000})

    assert response.status_code == 200


@pytest.mark.parametrize("cursor", ["garbage", "cD1ub3QtYS1kYXRl", "cD0yMDI0"])
def test_invalid_cursor_is_404_not_500(staff_client, cursor):
    response = staff_client.get(LIST, {"cursor": cursor})

    assert response.status_code == 404
    assert response.json()["type"] == "not_found"


def test_retrieve_has_execution_context_and_steps_log(staff_client):
    name, [pk] = kept_runs(1)

    response = staff_client.get(f"{LIST}{pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == pk
    assert body["execution"]["transactionId"] == f"{name}-t0"
    assert body["context"]["data"]["payload"] == 0
    assert [e["stepId"] for e in body["steps_log"]] == [f"{name}-one", f"{name}-two"]
    assert {"stepId", "stepName", "startedAt", "endedAt", "durationMs"} <= set(body["steps_log"][0])


def test_retrieve_unknown_execution_is_404(staff_client):
    response = staff_client.get(f"{LIST}wf_exec_nope/")

    assert response.status_code == 404
    assert response.json() == {
        "type": "not_found",
        "message": "Workflow execution wf_exec_nope could not be found.",
        "code": "ExecutionNotFound",
    }


def test_cancel_a_waiting_execution_reverts_it(staff_client):
    name = waiting_workflow()
    start(name, 1, "c-1")
    pk = WorkflowExecution.objects.get(workflow_id=name).pk

    response = staff_client.post(f"{LIST}{pk}/cancel/")

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["acknowledgement"]["has_finished"] is True
    assert body["execution"]["state"] == "reverted"
    assert WorkflowExecution.objects.get(pk=pk).state == "reverted"


def test_cancel_a_done_execution_reverts_it_and_again_is_409(staff_client):
    _, [pk] = kept_runs(1)

    first = staff_client.post(f"{LIST}{pk}/cancel/")
    second = staff_client.post(f"{LIST}{pk}/cancel/")

    assert first.status_code == 200
    assert first.json()["execution"]["state"] == "reverted"
    assert second.status_code == 409
    assert second.json()["code"] == "InvalidTransactionStateError"


def test_cancel_unknown_execution_is_404(staff_client):
    response = staff_client.post(f"{LIST}wf_exec_missing/cancel/")

    assert response.status_code == 404


def test_retry_a_waiting_step(staff_client):
    name = waiting_workflow()
    start(name, 1, "r-1")
    pk = WorkflowExecution.objects.get(workflow_id=name).pk

    response = staff_client.post(
        f"{LIST}{pk}/retry/", {"step_id": f"{name}-approve"}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    attempts = [e["attempt"] for e in body["execution"]["steps_log"] if "approve" in e["stepId"]]
    assert max(attempts) == 2
    assert body["execution"]["state"] == "invoking"


def test_retry_a_step_that_is_not_waiting_is_409(staff_client):
    name = waiting_workflow()
    start(name, 1, "r-2")
    pk = WorkflowExecution.objects.get(workflow_id=name).pk

    response = staff_client.post(f"{LIST}{pk}/retry/", {"step_id": f"{name}-first"}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "InvalidStepStateError"


def test_retry_a_step_of_a_finished_execution_is_409(staff_client):
    name, [pk] = kept_runs(1)

    response = staff_client.post(f"{LIST}{pk}/retry/", {"step_id": f"{name}-one"}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "TransactionFinishedError"


def test_retry_without_step_retries_the_compensation_of_a_failed_execution(staff_client):
    name, calls = failing_compensation_workflow()
    start(name, 1, "rc-1")
    row = WorkflowExecution.objects.get(workflow_id=name)
    assert row.state == "failed"

    response = staff_client.post(f"{LIST}{row.pk}/retry/", {}, format="json")

    assert response.status_code == 200
    assert response.json()["execution"]["state"] == "reverted"
    assert calls["compensate"] == 2


def test_retry_without_step_on_an_execution_that_is_not_failed_is_409(staff_client):
    _, [pk] = kept_runs(1)

    response = staff_client.post(f"{LIST}{pk}/retry/", {}, format="json")

    assert response.status_code == 409
    assert response.json()["type"] == "conflict"


def test_rerun_runs_the_same_input_as_a_new_transaction(staff_client):
    name, [pk] = kept_runs(1)

    response = staff_client.post(f"{LIST}{pk}/rerun/")

    assert response.status_code == 201
    body = response.json()
    assert body["result"] == 2  # input 0 -> 1 -> 2
    assert body["execution"]["id"] != pk
    assert body["acknowledgement"]["transaction_id"] != f"{name}-t0"
    assert WorkflowExecution.objects.filter(workflow_id=name).count() == 2


def test_rerun_of_a_waiting_workflow_is_202(staff_client):
    name = waiting_workflow()
    start(name, 1, "rr-1")
    pk = WorkflowExecution.objects.get(workflow_id=name).pk

    response = staff_client.post(f"{LIST}{pk}/rerun/")

    assert response.status_code == 202
    assert response.json()["execution_id"] not in (None, pk)


def test_execution_of_an_unregistered_workflow_is_still_readable(staff_client):
    row = WorkflowExecution.objects.create(
        workflow_id=uname("gone"), transaction_id="t", run_id="r", state="done"
    )

    detail = staff_client.get(f"{LIST}{row.pk}/")
    cancel = staff_client.post(f"{LIST}{row.pk}/cancel/")

    assert detail.status_code == 200
    assert detail.json()["steps_log"] == []
    assert cancel.status_code == 404
    assert cancel.json()["code"] == "WorkflowNotFound"


@pytest.mark.django_db
def test_created_bounds_with_offsets_postgresql_refuses_are_normalised(staff_client):
    url = "/api/workflow-executions/"
    for bound in (
        "4420-07-17T16:17:47+22:32",
        "9999-12-31T23:00:00-05:00",
        "0001-01-01T00:30:00+02:00",
    ):
        response = staff_client.get(url, {"created_before": bound, "created_after": bound})
        assert response.status_code == 200, (bound, response.content)
