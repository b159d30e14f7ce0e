"""URLs of the demo/host project: the admin, and the app's API with its schema and docs."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("workflows_app.api.urls")),
]
