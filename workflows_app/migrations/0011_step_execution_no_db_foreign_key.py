"""Step rows keep no foreign key in the database: its per-row check dominated the
retention cleanup (the ORM still cascades; see the field's comment)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows_app', '0010_step_id_keys'),
    ]

    operations = [
        migrations.AlterField(
            model_name='stepexecution',
            name='execution',
            field=models.ForeignKey(db_constraint=False, db_index=False, help_text='Execution this attempt belongs to.', on_delete=django.db.models.deletion.CASCADE, related_name='step_executions', to='workflows_app.workflowexecution', verbose_name='execution'),
        ),
    ]
