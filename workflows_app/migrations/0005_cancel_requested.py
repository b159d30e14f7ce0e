"""A cancel asked for while another process executes the run."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows_app', '0004_recovery_failures'),
    ]

    operations = [
        migrations.AddField(
            model_name='workflowexecution',
            name='cancel_requested_at',
            field=models.DateTimeField(blank=True, help_text='When a cancel was asked for while another process executed the run; that process stops at its next step boundary and compensates.', null=True, verbose_name='cancel requested at'),
        ),
    ]
