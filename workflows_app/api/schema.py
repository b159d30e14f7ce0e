"""The API's own OpenAPI schema and its Swagger UI page.

Both work without any ``REST_FRAMEWORK`` or ``SPECTACULAR_SETTINGS`` in the host
project and without ``drf_spectacular`` in ``INSTALLED_APPS``: the app's views carry
drf-spectacular's ``AutoSchema`` themselves, the schema covers only the app's routes
(wherever the host mounts them) and the settings it needs are applied per request.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from django.apps import apps
from django.middleware.csrf import get_token
from django.templatetags.static import static
from django.urls import get_script_prefix, include, path, reverse
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.settings import patched_settings
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny
from rest_framework.renderers import TemplateHTMLRenderer
from rest_framework.response import Response
from rest_framework.schemas.openapi import AutoSchema as DRFAutoSchema
from rest_framework.views import APIView

from .routes import router

# A fixed major version when the files do not come from drf-spectacular-sidecar.
SWAGGER_UI_CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"
SIDECAR_APP = "drf_spectacular_sidecar"


def _package_version() -> str:
    try:
        return version("workflows-app")
    except PackageNotFoundError:
        return "0"


SCHEMA_SETTINGS: dict[str, Any] = {
    "TITLE": "workflows_app API",
    "DESCRIPTION": "Workflow definitions, runs, step responses and stored executions.",
    "VERSION": _package_version(),
    "COMPONENT_SPLIT_REQUEST": True,
}


def api_patterns(request: Any) -> list:
    """The app's API routes under the prefix the host mounted them at."""
    namespace = request.resolver_match.namespace if request.resolver_match else ""
    root = reverse(f"{namespace}:api-root" if namespace else "api-root")
    prefix = root.removeprefix(get_script_prefix())
    return [path(prefix, include(router.urls))]


def spectacular_schema_class(schema_class: type) -> type:
    """``schema_class`` with drf-spectacular's ``AutoSchema`` right after its
    ``extend_schema`` layers.

    A method-level ``@extend_schema`` subclasses DRF's ``DEFAULT_SCHEMA_CLASS`` (DRF's
    own ``AutoSchema`` when the host sets none), and drf-spectacular's re-arranging
    keeps DRF's class ahead of its own; the layers' ``super()`` calls must reach
    drf-spectacular's.
    """
    if issubclass(schema_class, AutoSchema) and not issubclass(schema_class, DRFAutoSchema):
        return schema_class
    layers = tuple(
        cls
        for cls in schema_class.__mro__
        if cls not in DRFAutoSchema.__mro__
        and cls not in AutoSchema.__mro__
        and any(callable(value) for value in vars(cls).values())
    )
    return type(schema_class.__name__, (*layers, AutoSchema, DRFAutoSchema), {})


class AppSchemaGenerator(SchemaGenerator):
    """drf-spectacular's generator, whatever ``DEFAULT_SCHEMA_CLASS`` the host has."""

    def _set_schema_to_view(self, view: Any, schema: Any) -> None:
        schema_class = spectacular_schema_class(type(schema))
        if schema_class is not type(schema):
            schema = schema_class()
        super()._set_schema_to_view(view, schema)


def build_schema(request: Any) -> dict:
    """The OpenAPI document of the app's routes, as served by ``schema/``."""
    with patched_settings(SCHEMA_SETTINGS):
        generator = AppSchemaGenerator(patterns=api_patterns(request))
        return generator.get_schema(request=request, public=True)


class SchemaView(SpectacularAPIView):
    """``schema/``: the OpenAPI 3 document (YAML; ``?format=json`` for JSON). Public:
    it describes routes, not data."""

    permission_classes = [AllowAny]
    generator_class = AppSchemaGenerator
    custom_settings = SCHEMA_SETTINGS

    def get(self, request, *args, **kwargs):
        self.patterns = api_patterns(request)
        return super().get(request, *args, **kwargs)


class DocsView(APIView):
    """``docs/``: Swagger UI on ``schema/``, from the sidecar's static files when
    ``drf_spectacular_sidecar`` is installed, else from a CDN."""

    permission_classes = [AllowAny]
    renderer_classes = [TemplateHTMLRenderer]
    template_name = "workflows_app/api/docs.html"

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        namespace = request.resolver_match.namespace if request.resolver_match else ""
        schema_url = reverse(f"{namespace}:schema" if namespace else "schema")
        return Response(
            {
                "title": SCHEMA_SETTINGS["TITLE"],
                "config": {
                    "schema_url": schema_url + "?format=json",
                    "csrf_token": get_token(request),
                },
                "css": self.asset("swagger-ui.css"),
                "bundle": self.asset("swagger-ui-bundle.js"),
                "preset": self.asset("swagger-ui-standalone-preset.js"),
            },
            headers={"Cross-Origin-Opener-Policy": "unsafe-none"},
        )

    @staticmethod
    def asset(filename: str) -> str:
        if apps.is_installed(SIDECAR_APP):
            return static(f"{SIDECAR_APP}/swagger-ui-dist/{filename}")
        return f"{SWAGGER_UI_CDN}/{filename}"
