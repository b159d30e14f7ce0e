"""Settings of the qcluster workers and helper processes of tests/fault: those of
tests/background plus the app that defines the ``fault-*`` workflows."""

from tests.background.settings import *  # noqa: F403
from tests.background.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.fault.faultapp"]
