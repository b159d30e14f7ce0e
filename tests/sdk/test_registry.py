"""The workflow registry and definition-time workflow options."""

import pytest

from workflows_app.sdk import (
    CompositionError,
    WorkflowNotFound,
    create_step,
    create_workflow,
    get_workflow,
    list_workflows,
)

from .helpers import uname

pytestmark = pytest.mark.django_db


def _noop(inp, ctx):
    return inp


def test_get_workflow_returns_registered_workflow():
    step = create_step("s", _noop)
    name = uname()

    def composer(input):
        return step(input)

    wf = create_workflow(name, composer)
    assert get_workflow(name) is wf
    assert get_workflow(name).run(input=4).result == 4


def test_list_workflows_includes_new_workflows():
    step = create_step("s", _noop)
    names = [uname(), uname()]
    for name in names:

        def composer(input):
            step()

        create_workflow(name, composer)
    listed = list(list_workflows())
    assert all(any(w is get_workflow(n) for w in listed) for n in names)


def test_unknown_workflow_raises_workflow_not_found():
    assert issubclass(WorkflowNotFound, KeyError)
    with pytest.raises(WorkflowNotFound):
        get_workflow(uname("missing"))


def test_decorator_form_registers_workflow():
    step = create_step("s", _noop)
    name = uname()

    @create_workflow(name)
    def decorated(input):
        return step(input)

    assert get_workflow(name) is decorated
    assert decorated.run(input="x").result == "x"


def test_different_definition_under_same_name_raises():
    s1 = create_step("first", _noop)
    s2 = create_step("second", _noop)
    name = uname()

    def composer_one(input):
        s1()

    def composer_two(input):
        s2()

    create_workflow(name, composer_one)
    with pytest.raises(CompositionError):
        create_workflow(name, composer_two)


def test_identical_redefinition_is_accepted():
    step = create_step("s", _noop)
    name = uname()

    def composer(input):
        return step(input)

    create_workflow(name, composer)
    again = create_workflow(name, composer)
    assert again.run(input=9).result == 9
    assert get_workflow(name).run(input=8).result == 8


def test_plain_workflow_is_not_stored():
    step = create_step("s", _noop)

    def composer(input):
        step()

    assert not create_workflow(uname(), composer).options.get("store")


def test_explicit_store_option_is_kept():
    step = create_step("s", _noop)

    def composer(input):
        step()

    assert create_workflow(uname(), composer, store=True).options["store"] is True


@pytest.mark.parametrize(
    "step_options",
    [
        {"async_": True},
        {"timeout": 5},
        {"retry_interval": 1},
        {"retry_interval_awaiting": 1},
        {"auto_retry": False},
    ],
    ids=["async", "timeout", "retry_interval", "retry_interval_awaiting", "auto_retry_false"],
)
def test_step_options_force_store(step_options):
    step = create_step("s", _noop, **step_options)

    def composer(input):
        step()

    assert create_workflow(uname(), composer).options["store"] is True


@pytest.mark.parametrize(
    "wf_options",
    [{"timeout": 5}, {"idempotent": True}, {"retention_time": 60}],
    ids=["timeout", "idempotent", "retention_time"],
)
def test_workflow_options_force_store(wf_options):
    step = create_step("s", _noop)

    def composer(input):
        step()

    assert create_workflow(uname(), composer, **wf_options).options["store"] is True


def test_step_config_option_forces_store():
    step = create_step("s", _noop)

    def composer(input):
        step().config(timeout=5)

    assert create_workflow(uname(), composer).options["store"] is True


def test_dict_config_form_of_create_workflow():
    step = create_step("s", _noop)
    name = uname()

    def composer(input):
        return step(input)

    wf = create_workflow({"name": name, "retention_time": 60}, composer)
    assert get_workflow(name) is wf
    assert wf.options["store"] is True
    assert wf.run(input=1).result == 1
