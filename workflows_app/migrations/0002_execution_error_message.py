"""``WorkflowExecution.error`` becomes the top-level error's message (a string).

The execution-log schema's ``error`` is a message and ``error_stack`` its stack; the
structured error stays in the context and the step log. Existing rows keep their
message; going back rebuilds ``{"message", "name", "stack"}`` from the first error of
the context when it has one.
"""

from django.db import migrations, models

BATCH = 1000


def _message(error):
    if isinstance(error, dict):
        return str(error.get("message") or error.get("name") or "")
    return "" if error is None else str(error)


def to_message(apps, schema_editor):
    WorkflowExecution = apps.get_model("workflows_app", "WorkflowExecution")
    rows = WorkflowExecution.objects.filter(error__isnull=False).only("pk", "error")
    batch = []
    for row in rows.iterator(chunk_size=BATCH):
        row.error_message = _message(row.error)
        batch.append(row)
        if len(batch) >= BATCH:
            WorkflowExecution.objects.bulk_update(batch, ["error_message"])
            batch = []
    if batch:
        WorkflowExecution.objects.bulk_update(batch, ["error_message"])


def to_structured(apps, schema_editor):
    WorkflowExecution = apps.get_model("workflows_app", "WorkflowExecution")
    rows = WorkflowExecution.objects.exclude(error_message="").only(
        "pk", "error_message", "error_stack", "context"
    )
    batch = []
    for row in rows.iterator(chunk_size=BATCH):
        errors = (row.context or {}).get("errors") or []
        first = next(
            (e["error"] for e in errors if isinstance(e, dict) and isinstance(e.get("error"), dict)),
            None,
        )
        row.error = first or {
            "message": row.error_message,
            "name": "Error",
            "stack": row.error_stack,
        }
        batch.append(row)
        if len(batch) >= BATCH:
            WorkflowExecution.objects.bulk_update(batch, ["error"])
            batch = []
    if batch:
        WorkflowExecution.objects.bulk_update(batch, ["error"])


class Migration(migrations.Migration):
    dependencies = [
        ("workflows_app", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="workflowexecution",
            name="error_message",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.RunPython(to_message, to_structured, elidable=False),
        migrations.RemoveField(model_name="workflowexecution", name="error"),
        migrations.RenameField(
            model_name="workflowexecution", old_name="error_message", new_name="error"
        ),
        migrations.AlterField(
            model_name="workflowexecution",
            name="error",
            field=models.TextField(
                blank=True,
                default="",
                help_text=(
                    "Message of the top-level error (the structured error is in the context "
                    "and the step log)."
                ),
                verbose_name="error",
            ),
        ),
    ]
