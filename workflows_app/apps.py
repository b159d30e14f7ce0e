"""AppConfig: installs storage and scheduling into the orchestrator and discovers workflows."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WorkflowsAppConfig(AppConfig):
    name = "workflows_app"
    verbose_name = _("Settings")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from . import checks  # noqa: F401  (registers the system checks)

        autodiscover_modules("workflows")
