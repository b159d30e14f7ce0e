"""The detail page's live updates: a small JSON view that live.js polls.

While a run is unfinished its detail page asks, every second or so (slower while
nothing changes), for the row's ``version`` (incremented on every state write) and
state: one indexed read of two columns. Only when the version moved does the script
fetch the page again and swap its sections; it stops once the run has finished.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext as _

from ..status import FINISHED_STATES


def live_view(model_admin: Any, request: HttpRequest, object_id: str) -> JsonResponse:
    """``{"version", "state", "finished"}`` of one execution the user may view."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    queryset = model_admin.get_queryset(request).filter(pk=unquote(object_id))
    row = queryset.values("version", "state").first()
    if row is None:
        raise Http404(_("No workflow execution with that id."))
    response = JsonResponse({**row, "finished": row["state"] in FINISHED_STATES})
    add_never_cache_headers(response)
    return response
