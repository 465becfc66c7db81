"""A fake azure-identity credential: unsigned JWTs whose audience is the requested scope.

azure-ai-ml reads the token's claims (``aud`` must be the Azure ML resource when a job is
submitted, ``tid`` for studio links) without verifying the signature, so the token is a real
JWT shape with a dummy signature. Nothing here is a secret.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class FakeCredential:
    """Implements ``get_token`` and ``get_token_info``; records the scopes asked for."""

    def __init__(
        self, *, tenant_id: str = TENANT_ID, object_id: str = "0f0e0d0c-0b0a-4909-8807-060504030201"
    ) -> None:
        self.tenant_id = tenant_id
        self.object_id = object_id
        self.scopes: list[str] = []

    def _token(self, scopes: tuple[str, ...]) -> tuple[str, int]:
        self.scopes.extend(scopes)
        expires = int(time.time()) + 3600
        audience = scopes[0].removesuffix("/.default") if scopes else ""
        claims = {"aud": audience, "tid": self.tenant_id, "oid": self.object_id, "exp": expires}
        header = {"alg": "RS256", "typ": "JWT"}
        return f"{_b64(header)}.{_b64(claims)}.c2lnbmF0dXJl", expires

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        token, expires = self._token(scopes)
        return AccessToken(token, expires)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        token, expires = self._token(scopes)
        return AccessTokenInfo(token, expires)
