"""URLs of the API; a host mounts them with ``path("api/", include("workflows_app.api.urls"))``.

Besides the endpoints: the root (``""``, links to everything), the OpenAPI schema
(``schema/``) and its Swagger UI (``docs/``).
"""

from django.urls import path

from .root import APIRootView
from .routes import router
from .schema import DocsView, SchemaView

app_name = "workflows_app"

urlpatterns = [
    path("", APIRootView.as_view(), name="api-root"),
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", DocsView.as_view(), name="docs"),
    *router.urls,
]
