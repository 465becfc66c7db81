"""``python -m cli ...`` is the ``tuneloop`` command."""

from cli.main import main

raise SystemExit(main())
