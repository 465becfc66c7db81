"""infra/ for tuneloop's own lifecycle events: the topic, the app's role on it, the example
subscription (issue 12)."""

from __future__ import annotations

from typing import Any

from shared.lifecycle import event_kinds, event_type
from tests.infra.bicep import INFRA, accessor, parse, resource_config

TOPIC = INFRA / "modules" / "lifecycle-topic.bicep"
ROLE = INFRA / "modules" / "lifecycle-topic-role.bicep"
EXAMPLE = INFRA / "events" / "lifecycle-subscription.bicep"
# learn.microsoft.com/azure/role-based-access-control/built-in-roles (Integration)
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"


def _module(name: str) -> dict[str, Any]:
    module: dict[str, Any] = parse(INFRA / "main.bicep")["modules"][name]
    return module


def test_the_topic_takes_cloud_events_and_entra_id_only() -> None:
    """CloudEvents 1.0 input (what EventGridPublisherClient posts) and no keys/SAS in Azure."""
    props = resource_config(parse(TOPIC)["resources"]["topic"])["properties"]
    assert props["inputSchema"] == "CloudEventSchemaV1_0"
    assert props["disableLocalAuth"] is True
    assert "endpoint" in parse(TOPIC)["outputs"]


def test_the_app_identity_is_eventgrid_data_sender_on_the_topic_alone() -> None:
    """One role assignment: EventGrid Data Sender (its built-in id), scope the topic, the
    Function App's identity as principal."""
    parsed = parse(ROLE)
    roles = parsed["variables"]["roles"]["value"]
    assignments = [r for r in parsed["resources"].values()
                   if r["type"] == "Microsoft.Authorization/roleAssignments"]
    assert len(assignments) == 1
    config = resource_config(assignments[0])
    role_id = config["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
    role = roles[accessor(role_id)[1]]
    assert (role["name"], role["id"]) == ("EventGrid Data Sender", EVENTGRID_DATA_SENDER)
    assert config["scope"] == "topic"
    assert config["properties"]["principalId"] == "appPrincipalId"
    wired = _module("lifecycleTopicRole")["config"]
    assert accessor(wired["config"]["params"]["appPrincipalId"]) == [
        "functionApp", "outputs", "identityPrincipalId"]


def test_both_modules_are_optional_on_one_parameter() -> None:
    """lifecycleEvents (default true) deploys the topic and the role, or neither."""
    params = parse(INFRA / "main.bicep")["parameters"]
    assert params["lifecycleEvents"]["type"] == "bool"
    assert params["lifecycleEvents"]["default"] is True
    for name in ("lifecycleTopic", "lifecycleTopicRole"):
        assert _module(name)["config"]["condition"] == "lifecycleEvents"


def test_the_example_subscription_delivers_cloud_events_of_real_types() -> None:
    """The example webhook gets CloudEvents 1.0, filtered to lines/..., and every event type
    it names is one tuneloop publishes (shared.lifecycle)."""
    parsed = parse(EXAMPLE)
    props = resource_config(parsed["resources"]["lineChanges"])["properties"]
    assert props["eventDeliverySchema"] == "CloudEventSchemaV1_0"
    assert props["destination"]["endpointType"] == "WebHook"
    assert props["filter"]["includedEventTypes"] == "eventTypes"
    published = {event_type(kind) for kind in event_kinds()}
    named = set(parsed["parameters"]["eventTypes"]["default"])
    assert named
    assert named <= published, named - published
    assert any(d["type"] == "secure" for d in parsed["parameters"]["webhookUrl"]["decorators"])


def test_the_app_publishes_to_the_topic_when_there_is_one() -> None:
    """TUNELOOP_EVENTS_ENDPOINT is the topic's endpoint output, or '' (unset) without a topic."""
    settings = parse(INFRA / "main.bicep")["variables"]["tuneloopSettings"]["value"]
    operands = settings["TUNELOOP_EVENTS_ENDPOINT"]["operator"]["operands"]
    assert operands["condition"] == "lifecycleEvents"
    assert accessor(operands["true_value"]) == ["lifecycleTopic", "outputs", "endpoint"]
    assert operands["false_value"] == ""
    assert "TUNELOOP_EVENTS_KEY" not in settings
