"""workflows_app: Medusa-style workflows for Django."""

__version__ = "0.1.0"
