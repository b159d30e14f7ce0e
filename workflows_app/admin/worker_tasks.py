"""Links from a step attempt to the django-q2 task that ran it.

An attempt run by a worker keeps the task's id (``StepExecution.task_id``) and the
worker's ``host:pid``. django-q2 saves a failed task (its admin's "Failed tasks")
always, and a success ("Successful tasks") of the app's tasks only with
``WORKFLOWS["SAVE_TASK_RESULTS"]``, until a retention prunes it; the history links
to the ones that are there.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps
from django.urls import NoReverseMatch, reverse


def task_urls(task_ids: Iterable[str], admin_site_name: str = "admin") -> dict[str, str]:
    """Admin URLs of the saved django-q2 tasks among ``task_ids`` (one query)."""
    ids = {task_id for task_id in task_ids if task_id}
    if not ids or not apps.is_installed("django_q"):
        return {}
    from django_q.models import Task

    urls = {}
    for task_id, success in Task.objects.filter(id__in=ids).values_list("id", "success"):
        view = "success" if success else "failure"
        try:
            urls[task_id] = reverse(
                f"{admin_site_name}:django_q_{view}_change",
                args=[task_id],
                current_app=admin_site_name,
            )
        except NoReverseMatch:
            continue
    return urls
