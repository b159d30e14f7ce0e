from django.apps import AppConfig


class ExamplesConfig(AppConfig):
    name = "project.examples"
    label = "examples"
    verbose_name = "Example workflows"
