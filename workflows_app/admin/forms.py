"""Forms of the admin commands: complete a waiting step, run a workflow."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.forms.fields import InvalidJSONInput, JSONString
from django.utils.translation import gettext_lazy as _

from .. import graph, jsoninput


class JSONInputField(forms.JSONField):
    """A JSON textarea checked by :mod:`workflows_app.jsoninput` (the API's rule), which
    starts empty rather than showing ``null``."""

    def to_python(self, value: Any) -> Any:
        if self.disabled or value in self.empty_values:
            return super().to_python(value)
        if not isinstance(value, str):
            value = json.dumps(value)
        try:
            converted = jsoninput.loads(value, str(self.label or _("The value")))
        except jsoninput.JSONInputError as exc:
            if exc.code == "parse":
                raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
            raise forms.ValidationError(str(exc), code=exc.code) from None
        return JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Shown again as typed; never parsed here, so a refused document cannot recurse.
        if self.disabled:
            return initial
        return None if data is None else InvalidJSONInput(data)

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)


class CompleteStepForm(forms.Form):
    """Mark a step that waits for a response as succeeded or failed."""

    step_id = forms.CharField(widget=forms.HiddenInput)
    action = forms.ChoiceField(
        choices=[("invoke", "invoke"), ("compensate", "compensate")],
        initial="invoke",
        widget=forms.HiddenInput,
    )
    response = JSONInputField(
        label=_("Response (JSON)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "class": "wf-json-input"}),
        help_text=_(
            "Succeeded: the step's output. Failed: the error, e.g. "
            '{"message": "Payment declined"}.'
        ),
    )
    force_permanent_failure = forms.BooleanField(
        label=_("Fail permanently (skip remaining retries)"), required=False
    )
    outcome = forms.ChoiceField(
        choices=[("success", _("Mark succeeded")), ("failure", _("Mark failed"))],
        widget=forms.HiddenInput,
    )


class RunWorkflowForm(forms.Form):
    """Run a registered workflow with a JSON input."""

    workflow = forms.CharField(widget=forms.HiddenInput)
    input = JSONInputField(
        label=_("Input (JSON)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "class": "wf-json-input"}),
    )
    transaction_id = forms.CharField(
        label=_("Transaction ID (optional)"), required=False, max_length=255
    )


def run_form(
    name: str, data: Any = None, example: tuple[Any, str] | None = None
) -> RunWorkflowForm:
    """The Run form of one workflow (ids unique on the page of all workflows), its
    input filled with ``example`` (value, where it comes from) when there is one."""
    initial: dict[str, Any] = {"workflow": name}
    if example is not None:
        initial["input"] = example[0]
    form = RunWorkflowForm(data, initial=initial, auto_id=graph.html_id("id-run", name) + "-%s")
    if example is not None:
        form.fields["input"].help_text = _("Example from %(source)s.") % {"source": example[1]}
    return form
