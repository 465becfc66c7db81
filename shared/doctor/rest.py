"""A small REST reader for the APIs no installed SDK covers (Event Grid, queue peek).

azure-core's ``PipelineClient`` with a bearer-token policy for one audience, a single retry
and the caller's ``transport`` (tests pass the fake one). A non-2xx answer raises azure-core's
own exceptions (404 ResourceNotFoundError, 401 ClientAuthenticationError, others
HttpResponseError with the ARM error body parsed), which the one error mapper translates.
No heavy management SDK is added for three GETs.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core import PipelineClient
    from azure.core.credentials import TokenCredential
    from azure.core.rest import HttpResponse

__all__ = ["ARM", "ARM_SCOPE", "RestReader"]

ARM = "https://management.azure.com"
ARM_SCOPE = f"{ARM}/.default"
_MAX_PAGES = 20  # a list longer than this is not what we look for


class RestReader:
    """GETs (and tiny POSTs) with a token for ``scope``; ``transport`` for tests.

    One pipeline serves every request (its bearer policy keeps the token until it nears
    expiry, its transport the connection); ``close()`` ends it.
    """

    def __init__(self, credential: TokenCredential, scope: str, *, transport: Any = None) -> None:
        self.credential = credential
        self.scope = scope
        self.transport = transport

    @cached_property
    def _client(self) -> PipelineClient[Any, Any]:
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import (
            BearerTokenCredentialPolicy,
            HeadersPolicy,
            RetryPolicy,
            UserAgentPolicy,
        )

        policies = [
            HeadersPolicy(),
            UserAgentPolicy(sdk_moniker="tuneloop-doctor"),
            RetryPolicy(retry_total=1, retry_backoff_factor=0.2),
            BearerTokenCredentialPolicy(self.credential, self.scope),
        ]
        kwargs: dict[str, Any] = {"policies": policies}
        if self.transport is not None:
            kwargs["transport"] = self.transport
        return PipelineClient(base_url="", **kwargs)

    def send(self, method: str, url: str, *, headers: dict[str, str] | None = None,
             json: Any = None) -> HttpResponse:
        """The response to one request; raises azure-core's exception for a non-2xx status."""
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            map_error,
        )
        from azure.core.rest import HttpRequest

        request = HttpRequest(method, url, headers=headers, json=json)
        response: HttpResponse = self._client.send_request(request)
        response.read()
        if not 200 <= response.status_code < 300:
            error_map = {404: ResourceNotFoundError, 401: ClientAuthenticationError}
            map_error(response.status_code, response, error_map)
            raise HttpResponseError(response=response)
        return response

    def close(self) -> None:
        """Close the pipeline (and its transport) if one was built; idempotent."""
        client = self.__dict__.pop("_client", None)
        if client is not None:
            client.close()

    def get_json(self, url: str) -> Any:
        return self.send("GET", url).json()

    def list_values(self, url: str) -> Iterator[dict[str, Any]]:
        """The ``value`` items of an ARM list, following ``nextLink``."""
        next_url: str | None = url
        for _ in range(_MAX_PAGES):
            if not next_url:
                return
            page = self.get_json(next_url)
            for item in page.get("value") or []:
                if isinstance(item, dict):
                    yield item
            next_url = page.get("nextLink")
