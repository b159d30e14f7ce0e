"""The REST API (Django REST framework): definitions, runs, stored executions, events.

Mount it in the host's URLconf with ``path("api/", include("workflows_app.api.urls"))``.
"""
