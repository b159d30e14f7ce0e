"""AppConfig: installs storage and scheduling into the orchestrator and discovers workflows."""

from django.apps import AppConfig
from django.utils.functional import lazy


def _section_label() -> str:
    from .conf import workflows_settings

    return str(workflows_settings.ADMIN_SECTION_LABEL)


class WorkflowsAppConfig(AppConfig):
    name = "workflows_app"
    verbose_name = lazy(_section_label, str)()
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.apps import apps
        from django.utils.module_loading import autodiscover_modules

        from . import checks  # noqa: F401  (registers the system checks)
        from .background import build_scheduler, worker_interruptions
        from .brokers import apply_default_broker
        from .conf import workflows_settings
        from .engine import workflow_engine
        from .orchestration import runtime
        from .redaction import Redactor
        from .storage import OrmStorage
        from .worker import connect_worker_signals

        def apply_settings() -> None:
            # Invalid values are reported by the system checks; keep the old ones here.
            threads = workflows_settings.PARALLEL_THREADS
            keys = workflows_settings.REDACT_KEYS
            values = {
                "parallel_threads": threads if isinstance(threads, int) and threads > 0 else 4,
                "max_payload_bytes": workflows_settings.MAX_PAYLOAD_BYTES,
                "responses_in_background": workflows_settings.RESPONSES_IN_BACKGROUND is True,
                "redactor": Redactor(keys if isinstance(keys, list | tuple) else ()),
            }
            background = workflows_settings.BACKGROUND
            if getattr(runtime.scheduler, "name", None) != background:
                values["scheduler"] = build_scheduler(background)
            runtime.configure(**values)

        if apps.is_installed("django_q"):
            apply_default_broker()
        runtime.configure(
            storage=OrmStorage(),
            nested_finished=workflow_engine.complete_parent,
            interruptions=worker_interruptions(),
        )
        apply_settings()
        workflows_settings.on_reload(apply_settings)
        connect_worker_signals()
        autodiscover_modules("workflows")
