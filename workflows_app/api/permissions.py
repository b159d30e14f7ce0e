"""Permission classes of the API: the rule of :mod:`workflows_app.permissions`.

The views use ``WORKFLOWS["API_PERMISSION_CLASSES"]``, by default
:class:`WorkflowsAdminPermissions`: what a user may do through the API is exactly what
they may do in the admin. :class:`WorkflowsModelPermissions` drops the staff
condition, for hosts that deliberately give non-staff service accounts API access
through model permissions.

Each view maps its actions to a :class:`~workflows_app.permissions.Command` in
``command_for_action`` (``{action: (command, on_execution)}``); actions not listed
need ``read_command``.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission

from ..conf import workflows_settings
from ..permissions import Command, has_command_permission


def view_command(view: Any) -> tuple[Command, bool]:
    """The command (and whether it is on a stored execution) of the view's action."""
    commands = getattr(view, "command_for_action", {})
    default = (getattr(view, "read_command", Command.VIEW), False)
    return commands.get(getattr(view, "action", None) or "", default)


class WorkflowsAdminPermissions(BasePermission):
    """Staff users with the model permission of the action, as in the admin."""

    require_staff = True

    def has_permission(self, request, view) -> bool:
        command, on_execution = view_command(view)
        return has_command_permission(
            request.user, command, on_execution=on_execution, require_staff=self.require_staff
        )


class WorkflowsModelPermissions(WorkflowsAdminPermissions):
    """Any active user with the model permission of the action, staff or not."""

    require_staff = False


def api_permissions() -> list[BasePermission]:
    """Instances of the configured ``API_PERMISSION_CLASSES`` (read on every request)."""
    return [cls() for cls in workflows_settings.api_permission_classes()]
