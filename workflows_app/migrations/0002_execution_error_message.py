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


def _rewrite(queryset, field, compute):
    """Set ``field`` of every row of ``queryset`` to ``compute(row)``, in batches."""
    model = queryset.model
    batch = []
    for row in queryset.iterator(chunk_size=BATCH):
        setattr(row, field, compute(row))
        batch.append(row)
        if len(batch) >= BATCH:
            model.objects.bulk_update(batch, [field])
            batch = []
    if batch:
        model.objects.bulk_update(batch, [field])


def _first_structured(row):
    errors = (row.context or {}).get("errors") or []
    first = next(
        (e["error"] for e in errors if isinstance(e, dict) and isinstance(e.get("error"), dict)),
        None,
    )
    return first or {"message": row.error_message, "name": "Error", "stack": row.error_stack}


def to_message(apps, schema_editor):
    WorkflowExecution = apps.get_model("workflows_app", "WorkflowExecution")
    rows = WorkflowExecution.objects.filter(error__isnull=False).only("pk", "error")
    _rewrite(rows, "error_message", lambda row: _message(row.error))


def to_structured(apps, schema_editor):
    WorkflowExecution = apps.get_model("workflows_app", "WorkflowExecution")
    rows = WorkflowExecution.objects.exclude(error_message="").only(
        "pk", "error_message", "error_stack", "context"
    )
    _rewrite(rows, "error", _first_structured)


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
