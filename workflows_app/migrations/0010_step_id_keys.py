"""Stored flows and errors name a step by ``stepId`` instead of ``action``.

``action`` now only means the handler (``invoke`` or ``compensate``). Rows written
before hold the step id under ``action`` in three places: the definition tree
(``execution.definition``), each step's definition (``execution.steps.*.definition``)
and the recorded errors (``context.errors``). The key is renamed there, both ways.

The definition hash is computed over the step definitions, so it changes with the
key: a row whose stored hash is the hash of its stored definitions gets the hash of
the renamed ones, so that runs in flight are not reported as started with another
definition of their workflow.
"""

import hashlib
import json

from django.db import migrations, models

BATCH = 500
ROOT_ID = "_root"


def _rename(entry, old, new):
    if isinstance(entry, dict) and old in entry:
        entry[new] = entry.pop(old)


def _tree_entries(tree):
    """Every step entry of a nested definition tree (``next``: one entry or a list)."""
    pending = [tree]
    while pending:
        holder = pending.pop()
        following = holder.get("next") if isinstance(holder, dict) else None
        entries = following if isinstance(following, list) else [following]
        for entry in entries:
            if isinstance(entry, dict):
                yield entry
                pending.append(entry)


def _flat_shape(steps):
    """``[(path, definition), ...]`` in definition order (depth first from the root)."""
    shape = []
    root = steps.get(ROOT_ID) or {}
    pending = list(reversed(root.get("next") or []))
    seen = set()
    while pending and len(seen) < len(steps):
        path = pending.pop()
        step = steps.get(path)
        if not isinstance(step, dict) or path in seen:
            continue
        seen.add(path)
        shape.append((path, step.get("definition")))
        pending.extend(reversed(step.get("next") or []))
    return shape


def _hash(shape):
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()


def _shapes(flow):
    steps = flow.get("steps") if isinstance(flow.get("steps"), dict) else {}
    return [flow.get("definition") or {}, _flat_shape(steps)]


def _convert(row, old, new):
    """Rename ``old`` to ``new`` in the row's flow and errors; whether anything changed."""
    changed = False
    flow = row.execution if isinstance(row.execution, dict) else None
    if flow is not None:
        matching = [i for i, s in enumerate(_shapes(flow)) if _hash(s) == row.definition_hash]
        steps = flow.get("steps") if isinstance(flow.get("steps"), dict) else {}
        entries = list(_tree_entries(flow.get("definition")))
        entries += [s.get("definition") for s in steps.values() if isinstance(s, dict)]
        for entry in entries:
            if isinstance(entry, dict) and old in entry:
                _rename(entry, old, new)
                changed = True
        if matching and changed:
            row.definition_hash = _hash(_shapes(flow)[matching[0]])
    context = row.context if isinstance(row.context, dict) else {}
    errors = context.get("errors")
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict) and old in error:
            _rename(error, old, new)
            changed = True
    return changed


def _convert_all(apps, old, new):
    execution = apps.get_model("workflows_app", "WorkflowExecution")
    fields = ("execution", "context", "definition_hash")
    batch = []
    rows = execution.objects.only("pk", *fields).order_by("pk")
    for row in rows.iterator(chunk_size=BATCH):
        if _convert(row, old, new):
            batch.append(row)
        if len(batch) >= BATCH:
            execution.objects.bulk_update(batch, fields)
            batch = []
    if batch:
        execution.objects.bulk_update(batch, fields)


def to_step_id(apps, schema_editor):
    _convert_all(apps, "action", "stepId")


def to_action(apps, schema_editor):
    _convert_all(apps, "stepId", "action")


class Migration(migrations.Migration):
    dependencies = [
        ("workflows_app", "0009_step_answer"),
    ]

    operations = [
        migrations.RunPython(to_step_id, to_action, elidable=False),
        migrations.AlterField(
            model_name="stepexecution",
            name="step_id",
            field=models.CharField(
                help_text="Id of the step in its workflow (its name in the flow).",
                max_length=255,
                verbose_name="step ID",
            ),
        ),
    ]
