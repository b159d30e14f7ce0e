"""Consecutive failed recoveries of a run, so that a poison run ends failed."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows_app', '0003_expires_at'),
    ]

    operations = [
        migrations.AddField(
            model_name='workflowexecution',
            name='recovery_error',
            field=models.TextField(blank=True, default='', help_text='Error of the last failed recovery.', verbose_name='recovery error'),
        ),
        migrations.AddField(
            model_name='workflowexecution',
            name='recovery_failures',
            field=models.PositiveIntegerField(default=0, help_text="Consecutive recoveries that failed with the same error; at WORKFLOWS['MAX_RECOVERY_FAILURES'] the run is marked failed.", verbose_name='recovery failures'),
        ),
    ]
