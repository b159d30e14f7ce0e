"""Who may do what with workflows: one rule for the admin and the API.

Every operation is a :class:`Command`; :data:`COMMAND_PERMISSIONS` names the model
permission it needs (codenames of ``WorkflowExecution.Meta.permissions`` and Django's
``view_workflowexecution``). The rule is the Django admin's own: an active **staff**
user holding the permission; superusers hold every permission; a user who is not
staff gets nothing, whatever permissions they hold. A command on a stored execution
(cancel, retry, complete a step, run again) also needs the view permission, since it
shows the execution.

The API applies the same rule by default (``WorkflowsAdminPermissions``); a host
opens it to non-staff service accounts deliberately by listing
``WorkflowsModelPermissions`` in ``WORKFLOWS["API_PERMISSION_CLASSES"]``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

APP_LABEL = "workflows_app"


class Command(StrEnum):
    """An operation on workflows, as the admin and the API offer it."""

    VIEW = "view"
    VIEW_DEFINITIONS = "view_definitions"
    RUN = "run"
    CANCEL = "cancel"
    RETRY = "retry"
    COMPLETE_STEP = "complete_step"


#: Permission (``app_label.codename``) each command needs.
COMMAND_PERMISSIONS: dict[Command, str] = {
    Command.VIEW: f"{APP_LABEL}.view_workflowexecution",
    Command.RUN: f"{APP_LABEL}.run_workflow",
    Command.CANCEL: f"{APP_LABEL}.cancel_workflowexecution",
    Command.RETRY: f"{APP_LABEL}.retry_workflowexecution",
    Command.COMPLETE_STEP: f"{APP_LABEL}.complete_step_workflowexecution",
}

#: Any one of these lets a user browse the registered workflow definitions: their
#: own view permission, reading executions, or running workflows.
DEFINITION_VIEW_PERMISSIONS: tuple[str, ...] = (
    f"{APP_LABEL}.view_workflowdefinitionentry",
    COMMAND_PERMISSIONS[Command.VIEW],
    COMMAND_PERMISSIONS[Command.RUN],
)


def is_admin_user(user: Any) -> bool:
    """Whether ``user`` may use the admin at all (Django's ``AdminSite`` rule)."""
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def has_command_permission(
    user: Any, command: Command, *, on_execution: bool = False, require_staff: bool = True
) -> bool:
    """Whether ``user`` may perform ``command`` (on a stored execution when
    ``on_execution``). ``require_staff=False`` drops the staff condition, for API
    service accounts a host has chosen to allow."""
    if require_staff and not is_admin_user(user):
        return False
    if not (user and user.is_authenticated and user.is_active):
        return False
    if command is Command.VIEW_DEFINITIONS:
        return any(user.has_perm(permission) for permission in DEFINITION_VIEW_PERMISSIONS)
    if on_execution and not user.has_perm(COMMAND_PERMISSIONS[Command.VIEW]):
        return False
    return user.has_perm(COMMAND_PERMISSIONS[command])
