"""Index of the step attempts waiting for an answer (recovery of nested steps)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows_app', '0005_cancel_requested'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='stepexecution',
            index=models.Index(condition=models.Q(('status', 'WAITING')), fields=['execution'], name='wf_step_waiting_idx'),
        ),
    ]
