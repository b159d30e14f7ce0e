"""``expires_at``: the retention cleanup finds expired runs through an index.

Finished runs kept with a retention get ``expires_at = updated_at + retention_time``
(what the cleanup computed before), by one UPDATE in the database on PostgreSQL
and SQLite, in batches of rows elsewhere.
"""

import datetime

import django.utils.timezone
from django.db import migrations, models

FINISHED = ("done", "failed", "reverted")


def backfill_expires_at(apps, schema_editor):
    connection = schema_editor.connection
    execution = apps.get_model("workflows_app", "WorkflowExecution")
    table = connection.ops.quote_name(execution._meta.db_table)
    where = "retention_time IS NOT NULL AND expires_at IS NULL AND state IN (%s, %s, %s)"
    if connection.vendor == "postgresql":
        expiry = "updated_at + retention_time * interval '1 second'"
    elif connection.vendor == "sqlite":
        expiry = "strftime('%%Y-%%m-%%d %%H:%%M:%%f', updated_at, retention_time || ' seconds')"
    else:
        rows = execution.objects.filter(
            retention_time__isnull=False, expires_at__isnull=True, state__in=FINISHED
        )
        for pk, updated_at, retention in rows.values_list("pk", "updated_at", "retention_time"):
            execution.objects.filter(pk=pk).update(
                expires_at=updated_at + datetime.timedelta(seconds=retention)
            )
        return
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET expires_at = {expiry} WHERE {where}", FINISHED)


class Migration(migrations.Migration):
    dependencies = [
        ("workflows_app", "0002_execution_error_message"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="workflowexecution",
            name="wf_exec_retention_idx",
        ),
        migrations.AddField(
            model_name="workflowexecution",
            name="expires_at",
            field=models.DateTimeField(
                blank=True,
                help_text="End of the finished run's retention; the cleanup deletes it from then on.",
                null=True,
                verbose_name="expires at",
            ),
        ),
        migrations.AlterField(
            model_name="workflowexecution",
            name="updated_at",
            field=models.DateTimeField(
                default=django.utils.timezone.now,
                help_text="Last write of the row.",
                verbose_name="updated at",
            ),
        ),
        migrations.RunPython(backfill_expires_at, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="workflowexecution",
            index=models.Index(
                condition=models.Q(("expires_at__isnull", False)),
                fields=["expires_at", "id"],
                name="wf_exec_expires_idx",
            ),
        ),
    ]
