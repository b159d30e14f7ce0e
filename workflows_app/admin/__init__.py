"""The admin: a read-only browser of workflow executions and workflow definitions.

Section "Settings" (the AppConfig's ``verbose_name``, ``WORKFLOWS["ADMIN_SECTION_LABEL"]``)
with two entries:

* **Workflows** (:class:`WorkflowExecutionAdmin`): the list of stored executions and a
  detail page with the step graph, a Gantt chart of the attempts, the payload, the
  history of every step and the raw JSON; plus commands (cancel, retry a waiting step,
  mark a waiting step succeeded or failed, retry compensation, run again).
* **Workflow definitions** (:class:`WorkflowDefinitionAdmin`, on a proxy model): the
  registered workflows with their options, hooks and graph, and a form to run one.

Every command goes through :data:`workflows_app.engine.workflow_engine`; the admin never
drives the orchestrator or writes the models itself.
"""

from .changelist import EstimatedCountPaginator
from .definitions import WorkflowDefinitionAdmin
from .executions import WorkflowExecutionAdmin
from .forms import CompleteStepForm, RunWorkflowForm

__all__ = [
    "CompleteStepForm",
    "EstimatedCountPaginator",
    "RunWorkflowForm",
    "WorkflowDefinitionAdmin",
    "WorkflowExecutionAdmin",
]
