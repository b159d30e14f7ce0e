"""AppConfig of the fault-injection test app (its ``workflows`` module is autodiscovered)."""

from django.apps import AppConfig


class FaultAppConfig(AppConfig):
    name = "tests.fault.faultapp"
    label = "workflows_faultapp"
    default_auto_field = "django.db.models.BigAutoField"
