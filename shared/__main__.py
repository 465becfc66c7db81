"""``python -m shared ...`` is the ``tuneloop`` command."""

from shared.cli import main

raise SystemExit(main())
