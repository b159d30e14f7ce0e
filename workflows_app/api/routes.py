"""The API's endpoints as one router: the URLconf mounts it and the schema describes it."""

from rest_framework.routers import SimpleRouter

from .views import WorkflowExecutionViewSet, WorkflowViewSet

router = SimpleRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("workflow-executions", WorkflowExecutionViewSet, basename="execution")
