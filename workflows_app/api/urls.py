"""URLs of the API; a host mounts them with ``include("workflows_app.api.urls")``."""

from rest_framework.routers import SimpleRouter

from .views import WorkflowExecutionViewSet, WorkflowViewSet

app_name = "workflows_app"

router = SimpleRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("workflow-executions", WorkflowExecutionViewSet, basename="execution")

urlpatterns = router.urls
