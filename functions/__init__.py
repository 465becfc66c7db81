"""Triggers only: decode the binding, call shared/, map errors to retry / no-retry."""
