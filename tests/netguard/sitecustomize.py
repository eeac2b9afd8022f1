"""Loaded by every Python process the tests start (tests/conftest.py puts this folder on
PYTHONPATH): records any attempt to reach an address outside the loopback range."""

import os

if os.environ.get("MAILDIAG_NETGUARD_LOG"):
    import netguard_core

    netguard_core.install(os.environ["MAILDIAG_NETGUARD_LOG"])
