"""AppConfig of the background test app (its ``workflows`` module is autodiscovered)."""

from django.apps import AppConfig


class BgAppConfig(AppConfig):
    name = "tests.background.bgapp"
    label = "workflows_bgapp"
    default_auto_field = "django.db.models.BigAutoField"
