"""Checkpoint storage on the Django ORM.

``orm`` holds :class:`OrmStorage` (the orchestrator's storage protocol), ``leases``
who holds a run and for how long, ``sql`` the statements written by hand.
"""

from .leases import Handle, LeaseKeeper, lease_keeper, new_owner
from .orm import OrmStorage, execution_status, retention_for

__all__ = [
    "Handle",
    "LeaseKeeper",
    "OrmStorage",
    "execution_status",
    "lease_keeper",
    "new_owner",
    "retention_for",
]
