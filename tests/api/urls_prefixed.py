"""A host that mounts the API under another prefix, beside URLs of its own."""

from django.http import HttpResponse
from django.urls import include, path

urlpatterns = [
    path("health/", lambda request: HttpResponse("ok")),
    path("ops/workflows-api/", include("workflows_app.api.urls")),
]
