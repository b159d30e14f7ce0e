"""Sensitive values reach the step but never the database (SPEC 5.2)."""

from __future__ import annotations

import json

import pytest

from workflows_app.engine import workflow_engine
from workflows_app.sdk import StepResponse, create_step, create_workflow

from .helpers import dump_row, dump_steps, paths_holding, rows, step_rows, uname

pytestmark = pytest.mark.django_db(transaction=True)

SECRETS = ("s3cret", "4111", "tok-9f8e7d6c5b")
MASK = "[REDACTED]"
TOKEN = "tok-9f8e7d6c5b"
SECRET_INPUT = {"password": "s3cret", "card": {"number": "4111"}, "amount": 5}


def _secret_workflow(*, fail: bool = False):
    """``charge`` gets the card and returns a token; ``after`` then passes or fails."""
    name = uname("redact")
    seen: list[dict] = []

    def charge(value, ctx):
        # The step itself sees the real values.
        assert value["password"] == "s3cret"
        assert value["card"] == {"number": "4111"}
        seen.append(value)
        return StepResponse({"token": TOKEN, "last2": "11"})

    def refund(data, ctx):
        seen.append({"refund": data})

    def explode(value, ctx):
        raise ValueError("declined")

    step = create_step(f"{name}-charge", charge, refund, sensitive=["input.card", "output.token"])
    after = create_step(f"{name}-after", explode if fail else (lambda value, ctx: value))

    def compose(inp):
        out = step(inp)
        after(out)
        return out

    create_workflow(name, compose, store=True, retention_time=3600)
    return name, seen


def _assert_nothing_secret(text: str) -> None:
    data = json.loads(text)
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} stored at {paths_holding(data, secret)}"
    assert MASK in text


def test_secrets_reach_the_step_but_no_stored_column():
    name, seen = _secret_workflow()

    res = workflow_engine.run(name, input=dict(SECRET_INPUT), transaction_id="pay-1")

    # Inside the process the values are real.
    assert seen == [SECRET_INPUT]
    assert res.result["token"] == TOKEN
    [row] = rows(name)
    _assert_nothing_secret(dump_row(row))
    assert row.input_payload["password"] == MASK
    assert row.context["data"]["payload"]["password"] == MASK
    assert row.output_payload == {"token": MASK, "last2": "11"}


def test_step_records_mask_declared_paths_and_redact_keys():
    name, _seen = _secret_workflow()

    workflow_engine.run(name, input=dict(SECRET_INPUT), transaction_id="pay-2")

    [row] = rows(name)
    charge = next(s for s in step_rows(row) if s.step_id == f"{name}-charge")
    assert charge.input == {"password": MASK, "card": MASK, "amount": 5}
    assert charge.output == {"token": MASK, "last2": "11"}
    assert charge.compensate_input == {"token": MASK, "last2": "11"}
    invoke = row.context["data"]["invoke"][f"{name}-charge"]
    assert invoke["output"] == {"token": MASK, "last2": "11"}
    assert invoke["compensateInput"] == {"token": MASK, "last2": "11"}
    _assert_nothing_secret(dump_steps(row))
    _assert_nothing_secret(json.dumps([row.context["data"]["invoke"], row.output_payload]))


def test_failed_run_masks_step_rows_steps_log_and_compensation():
    name, seen = _secret_workflow(fail=True)

    res = workflow_engine.run(
        name, input=dict(SECRET_INPUT), transaction_id="pay-3", throw_on_error=False
    )

    assert res.acknowledgement["has_failed"] is True
    # The compensation received the real (unmasked) compensate input.
    assert seen[-1] == {"refund": {"token": TOKEN, "last2": "11"}}
    [row] = rows(name)
    assert row.state == "reverted"
    assert row.error == "declined"
    log = workflow_engine.retrieve_workflow_execution(row.id).steps_log()
    assert [(e["stepId"], e["handlerType"]) for e in log][-1] == (f"{name}-charge", "compensate")
    _assert_nothing_secret(json.dumps(log))
    _assert_nothing_secret(json.dumps([row.context["data"]["invoke"], row.context["errors"]]))


def test_default_redact_keys_apply_at_any_depth_case_insensitively():
    name = uname("redact-keys")
    step = create_step(
        f"{name}-s", lambda value, ctx: {"nested": [{"Authorization": "Bearer zz9"}]}
    )
    create_workflow(name, lambda inp: step(inp), store=True, retention_time=3600)

    workflow_engine.run(
        name,
        input={"user": {"PassWord": "hunter2", "CVV": "123x"}, "secret": "abc-secret-xyz"},
        transaction_id="keys-1",
    )

    [row] = rows(name)
    text = dump_row(row)
    for value in ("hunter2", "123x", "abc-secret-xyz", "Bearer zz9"):
        assert value not in text
    assert row.input_payload == {
        "user": {"PassWord": MASK, "CVV": MASK},
        "secret": MASK,
    }
