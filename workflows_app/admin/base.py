"""What every page of the app's admin shares: read-only, the app's stylesheet, and
the view permission of the shared permission map."""

from __future__ import annotations

from django.contrib import admin

from ..permissions import Command, has_command_permission


class ReadOnlyAdmin(admin.ModelAdmin):
    """Read-only the Django way: nothing is added, changed or deleted through the
    model's forms; commands go through the engine. ``view_command`` names the entry of
    the permission map that grants the view."""

    view_command: Command = Command.VIEW

    class Media:
        css = {"all": ("workflows_app/admin.css",)}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return has_command_permission(request.user, self.view_command)
