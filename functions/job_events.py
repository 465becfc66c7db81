"""Not built yet (see the open issue that owns it)."""

import azure.functions as func

bp = func.Blueprint()
