"""The API root (``/api/``): links to the endpoints, the schema and the docs page."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from .views import WorkflowsAPIMixin

# What the root lists: its key and the URL name of the endpoint.
ROOT_ENDPOINTS = {
    "workflows": "workflow-list",
    "workflow-executions": "execution-list",
    "schema": "schema",
    "docs": "docs",
}


class APIRootView(WorkflowsAPIMixin, APIView):
    """``/api/``: links to the endpoints. Public: it lists routes, not data."""

    def get_permissions(self):
        return [AllowAny()]

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        namespace = request.resolver_match.namespace
        prefix = f"{namespace}:" if namespace else ""
        return Response(
            {key: reverse(prefix + name, request=request) for key, name in ROOT_ENDPOINTS.items()}
        )
