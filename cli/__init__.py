"""The terminal entry point: the ``tuneloop`` command (also ``python -m cli``).

An entry point like the Functions triggers in ``functions/``: it translates arguments into calls
of the core in ``shared/`` (and may start the embedded local platform). ``shared/`` never imports
it.
"""
