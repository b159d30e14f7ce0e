"""Permission classes of the API.

The views use ``WORKFLOWS["API_PERMISSION_CLASSES"]`` (default: staff users only,
``IsAdminUser``). :class:`WorkflowsModelPermissions` is an alternative a host may put
there to grant the API per model permission instead of per staff flag.
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from ..conf import workflows_settings

#: Permission needed per view action; reads need the model's view permission.
ACTION_PERMISSIONS = {
    "run": "workflows_app.run_workflow",
    "rerun": "workflows_app.run_workflow",
    "step_success": "workflows_app.complete_step_workflowexecution",
    "step_failure": "workflows_app.complete_step_workflowexecution",
    "cancel": "workflows_app.cancel_workflowexecution",
    "retry": "workflows_app.retry_workflowexecution",
}
READ_PERMISSION = "workflows_app.view_workflowexecution"


class WorkflowsModelPermissions(BasePermission):
    """Authenticated users with the model permission of the action.

    Reads (definitions, executions, events) need ``view_workflowexecution``; commands
    need ``run_workflow``, ``complete_step_workflowexecution``,
    ``cancel_workflowexecution`` or ``retry_workflowexecution``.
    """

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        permission = ACTION_PERMISSIONS.get(getattr(view, "action", None) or "", READ_PERMISSION)
        return user.has_perm(permission)


def api_permissions() -> list[BasePermission]:
    """Instances of the configured ``API_PERMISSION_CLASSES`` (read on every request)."""
    return [cls() for cls in workflows_settings.api_permission_classes()]
