"""Subcommands of the ``tuneloop`` CLI: one module each (``add_arguments`` + ``run``)."""
