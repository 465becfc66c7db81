"""Settings isolated on a shared Azurite: containers, ledger table and home of their own.

The tests' fixtures (tests/conftest.py, tests/e2e/conftest.py, the local-platform tests) and
bench/burst.py all run on one Azurite at a time; each gets names no one else uses, so runs
never see each other's blobs or rows.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from shared.settings import Settings

__all__ = ["isolated_settings"]


def isolated_settings(
    connection_string: str, home: Path, *, table: str = "runs", **changes: Any
) -> Settings:
    """Local-platform settings on the Azurite at ``connection_string`` and ``home``, with the
    four containers and the ledger table (``table`` + the tag) named with one random tag;
    ``changes`` sets any other field."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        storage_connection_string=connection_string,
        incoming_container=f"incoming-{tag}",
        reports_container=f"reports-{tag}",
        rejected_container=f"rejected-{tag}",
        prepared_container=f"prepared-{tag}",
        ledger_table=f"{table}{tag}",
        platform="local",
        home=home,
        **changes,
    )
