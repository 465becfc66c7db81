"""The two Event Grid subscriptions the loop runs on, read through ARM REST.

- the data account's system topic → the blob extension webhook
  (``https://<app>/runtime/webhooks/blobs?functionName=Host.Functions.ingest_dataset``) for
  ``Microsoft.Storage.BlobCreated`` under ``/blobServices/default/containers/<incoming>/``;
- the workspace's system topic → the ``on_job_event`` function (AzureFunction destination)
  for ``RunCompleted`` + ``RunStatusChanged``, filtered on ``data.runTags.tuneloop_run``.

Both need a dead-letter destination (an event Event Grid cannot deliver is kept, not lost).
What "right" means mirrors ``infra/events/subscriptions.bicep`` (subscriptions
``tuneloop-ingest`` and ``tuneloop-jobs``). Subscriptions are found by what they do, not by
name, so hand-made ones (docs/azure.md's manual path) are checked the same way.

ARM shape (Microsoft.EventGrid 2022-06-15, the version the Bicep uses): a system topic has
``properties.source`` (the resource id) and ``properties.topicType``; an event subscription
has ``properties.destination`` (or ``deliveryWithResourceIdentity.destination``) with
``endpointType`` ``WebHook`` (``properties.endpointBaseUrl``: the URL without its query, which
holds the key) or ``AzureFunction`` (``properties.resourceId``), ``properties.filter``
(``includedEventTypes``, ``subjectBeginsWith``, ``advancedFilters``), ``retryPolicy`` and
``deadLetterDestination`` (or ``deadLetterWithResourceIdentity.deadLetterDestination``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from shared.doctor.checks import Check, Role, fail, ok, warn
from shared.doctor.rest import ARM, RestReader
from shared.errors import map_azure_errors
from shared.naming import RUN_TAG

__all__ = [
    "API_VERSION",
    "BLOB_CREATED",
    "JOB_EVENT_FUNCTION",
    "JOB_EVENT_TYPES",
    "blob_subscription_check",
    "find_system_topic",
    "job_subscription_check",
    "reader_role",
]

API_VERSION = "2022-06-15"
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
JOB_EVENT_TYPES = (
    "Microsoft.MachineLearningServices.RunCompleted",
    "Microsoft.MachineLearningServices.RunStatusChanged",
)
JOB_EVENT_FUNCTION = "on_job_event"  # functions/job_events.py
BLOB_WEBHOOK_PATH = "/runtime/webhooks/blobs"  # the blob extension's Event Grid webhook
RUN_TAG_FILTER = f"data.runTags.{RUN_TAG}"
_READER = "Reader (or EventGrid EventSubscription Reader)"
_BICEP = "infra/events/subscriptions.bicep (`azd up` runs it after the code is deployed)"


def _topics(arm: RestReader, scope: str) -> Iterator[dict[str, Any]]:
    url = f"{ARM}{scope}/providers/Microsoft.EventGrid/systemTopics?api-version={API_VERSION}"
    return arm.list_values(url)


def find_system_topic(
    arm: RestReader, *, source_suffix: str, scopes: Iterable[str]
) -> dict[str, Any] | None:
    """The system topic whose source ends with ``source_suffix`` (case-insensitive), searched
    in each scope in turn (a resource group first, then the subscription)."""
    wanted = source_suffix.lower()
    for scope in scopes:
        with map_azure_errors(f"listing Event Grid system topics in {scope}"):
            for topic in _topics(arm, scope):
                source = str((topic.get("properties") or {}).get("source") or "").lower()
                if source.endswith(wanted):
                    return topic
    return None


def _subscriptions(arm: RestReader, topic: Mapping[str, Any]) -> list[dict[str, Any]]:
    url = f"{ARM}{topic['id']}/eventSubscriptions?api-version={API_VERSION}"
    with map_azure_errors(f"listing the event subscriptions of system topic {topic.get('name')}"):
        return list(arm.list_values(url))


def _props(sub: Mapping[str, Any]) -> dict[str, Any]:
    props = sub.get("properties")
    return props if isinstance(props, dict) else {}


def _destination(sub: Mapping[str, Any]) -> dict[str, Any]:
    props = _props(sub)
    dest = props.get("destination") or (props.get("deliveryWithResourceIdentity") or {}).get(
        "destination"
    )
    return dest if isinstance(dest, dict) else {}


def _dead_letter(sub: Mapping[str, Any]) -> dict[str, Any] | None:
    props = _props(sub)
    dead = props.get("deadLetterDestination") or (
        props.get("deadLetterWithResourceIdentity") or {}
    ).get("deadLetterDestination")
    return dead if isinstance(dead, dict) and dead else None


def _dead_letter_text(dead: Mapping[str, Any]) -> str:
    target = dead.get("properties") or {}
    account = str(target.get("resourceId") or "").rsplit("/", 1)[-1]
    container = target.get("blobContainerName")
    return f"dead-letters to {account}/{container}" if account else "dead-letters"


def _retry_text(sub: Mapping[str, Any]) -> str:
    retry = _props(sub).get("retryPolicy") or {}
    attempts, ttl = retry.get("maxDeliveryAttempts"), retry.get("eventTimeToLiveInMinutes")
    return f"{attempts} attempts over {ttl} min" if attempts and ttl else "default retries"


def _event_types(sub: Mapping[str, Any]) -> list[str] | None:
    """The included event types; None = every event type of the topic."""
    types = (_props(sub).get("filter") or {}).get("includedEventTypes")
    return [str(t) for t in types] if isinstance(types, list) and types else None


def _common_problems(sub: Mapping[str, Any]) -> list[str]:
    props = _props(sub)
    problems = []
    state = str(props.get("provisioningState") or "Succeeded")
    if state.lower() != "succeeded":
        problems.append(f"is {state}")
    if _dead_letter(sub) is None:
        problems.append("has no dead-letter destination (an undeliverable event would be lost)")
    return problems


def _is_blob_webhook(sub: Mapping[str, Any]) -> bool:
    dest = _destination(sub)
    url = str((dest.get("properties") or {}).get("endpointBaseUrl") or "")
    return str(dest.get("endpointType")).lower() == "webhook" and url.rstrip("/").lower(
    ).endswith(BLOB_WEBHOOK_PATH)


def _is_job_function(sub: Mapping[str, Any]) -> bool:
    dest = _destination(sub)
    target = str((dest.get("properties") or {}).get("resourceId") or "").lower()
    return str(dest.get("endpointType")).lower() == "azurefunction" and target.endswith(
        f"/functions/{JOB_EVENT_FUNCTION}".lower()
    )


def _best(
    found: list[tuple[dict[str, Any], list[str], list[str]]],
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The candidate with the fewest problems, then the fewest warnings."""
    return min(found, key=lambda f: (len(f[1]), len(f[2])))


def blob_subscription_check(
    arm: RestReader, *, account: str, incoming: str, scopes: Iterable[str]
) -> Check:
    """BlobCreated under ``incoming/`` of ``account`` reaches the blob extension webhook."""
    name = "eventgrid.blob"
    topic = find_system_topic(
        arm, source_suffix=f"/providers/Microsoft.Storage/storageAccounts/{account}",
        scopes=scopes,
    )
    if topic is None:
        return fail(name, f"no Event Grid system topic on storage account {account}",
                    f"deploy {_BICEP}, or create the system topic and the subscription as in "
                    "docs/azure.md")
    candidates = [s for s in _subscriptions(arm, topic) if _is_blob_webhook(s)]
    if not candidates:
        return fail(name, f"no subscription of system topic {topic.get('name')} delivers to the "
                    f"blob extension webhook ({BLOB_WEBHOOK_PATH})",
                    f"deploy {_BICEP}; it needs the blobs_extension key, so after the code")
    incoming_blob = f"/blobServices/default/containers/{incoming}/blobs/"
    own_prefix = f"/blobServices/default/containers/{incoming}/"
    judged = []
    for sub in candidates:
        problems, warnings = _common_problems(sub), []
        types = _event_types(sub)
        if types is not None and BLOB_CREATED.lower() not in {t.lower() for t in types}:
            problems.append(f"does not include {BLOB_CREATED} (only {', '.join(types)})")
        elif types is None:
            warnings.append(f"delivers every event type, not only {BLOB_CREATED}")
        begins = str((_props(sub).get("filter") or {}).get("subjectBeginsWith") or "")
        if not incoming_blob.lower().startswith(begins.lower()):
            problems.append(f"subject filter {begins!r} does not let blobs of {incoming}/ through")
        elif not begins.lower().startswith(own_prefix.lower()):
            warnings.append(f"subject filter {begins!r} is wider than the {incoming} container "
                            "(every write to the account calls the function)")
        judged.append((sub, problems, warnings))
    sub, problems, warnings = _best(judged)
    return _verdict(name, f"subscription {sub.get('name')} (BlobCreated under {incoming}/ → "
                    "blob extension webhook)", sub, problems, warnings)


def job_subscription_check(arm: RestReader, *, workspace_id: str, scopes: Iterable[str]) -> Check:
    """RunCompleted and RunStatusChanged of the workspace reach ``on_job_event``."""
    name = "eventgrid.jobs"
    topic = find_system_topic(arm, source_suffix=workspace_id, scopes=scopes)
    workspace = workspace_id.rsplit("/", 1)[-1]
    if topic is None:
        return fail(name, f"no Event Grid system topic on workspace {workspace}",
                    f"deploy {_BICEP}, or create it as in docs/azure.md (job events)")
    candidates = [s for s in _subscriptions(arm, topic) if _is_job_function(s)]
    if not candidates:
        return fail(name, f"no subscription of system topic {topic.get('name')} delivers to the "
                    f"{JOB_EVENT_FUNCTION} function", f"deploy {_BICEP}")
    judged = []
    for sub in candidates:
        problems, warnings = _common_problems(sub), []
        types = _event_types(sub)
        if types is not None:
            have = {t.lower() for t in types}
            missing = [t for t in JOB_EVENT_TYPES if t.lower() not in have]
            if missing:
                problems.append(f"does not include {', '.join(missing)}")
        filters = (_props(sub).get("filter") or {}).get("advancedFilters") or []
        keys = {str(f.get("key")).lower() for f in filters if isinstance(f, dict)}
        if RUN_TAG_FILTER.lower() not in keys and f"data.RunTags.{RUN_TAG}".lower() not in keys:
            warnings.append(f"no advanced filter on {RUN_TAG_FILTER}: every job of the workspace "
                            "calls the function (it ignores foreign jobs itself)")
        judged.append((sub, problems, warnings))
    sub, problems, warnings = _best(judged)
    return _verdict(name, f"subscription {sub.get('name')} (RunCompleted + RunStatusChanged → "
                    f"{JOB_EVENT_FUNCTION})", sub, problems, warnings)


def _verdict(
    name: str, what: str, sub: Mapping[str, Any], problems: list[str], warnings: list[str]
) -> Check:
    if problems:
        return fail(name, f"{what} {'; '.join(problems)}", f"redeploy {_BICEP}, or fix the "
                    "subscription in the portal")
    dead = _dead_letter(sub)
    detail = f"{what}: {_retry_text(sub)}, {_dead_letter_text(dead or {})}"
    if warnings:
        return warn(name, f"{detail}; {'; '.join(warnings)}", f"see {_BICEP} for the filters")
    return ok(name, detail)


def reader_role(scope: str) -> Role:
    """Who may read the subscriptions: the person running the doctor, not the app."""
    return Role(_READER, scope)

