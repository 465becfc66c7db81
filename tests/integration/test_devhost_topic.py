"""The devhost serves the home's local Event Grid topic and points its own app at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient
from pydantic import SecretStr

from functions.devhost import DevHost
from shared.platform.local.azurite import read_host_state
from shared.platform.local.topic import read_events, topic_key
from shared.settings import Settings
from tests.integration.test_devhost import HostedFake

pytestmark = pytest.mark.integration


def _published(host: DevHost) -> tuple[str, str]:
    """(endpoint, key) the devhost's app publishes with (G's settings, once they exist)."""
    endpoint = getattr(host.settings, "events_endpoint", None)
    key = getattr(host.settings, "events_key", None)
    key = key.get_secret_value() if isinstance(key, SecretStr) else key
    topic = host.topic
    assert topic is not None
    return (endpoint or topic.url, key or topic.key)


def test_the_devhost_serves_the_topic_records_it_and_stops_it(settings: Settings) -> None:
    """devhost.json names the running topic (URL, key); the app's settings point at it; the
    real client posts to it and the event lands in the home; stop() closes the port."""
    host = DevHost(settings, platform=HostedFake(), run_timers=False).start()
    try:
        topic = host.topic
        assert topic is not None
        state = read_host_state(Path(settings.home))
        assert state is not None
        assert state.events_endpoint == topic.url
        assert state.events_key == topic.key == topic_key(Path(settings.home))
        if "events_endpoint" in Settings.model_fields:
            assert getattr(host.settings, "events_endpoint", None) == topic.url
            assert _published(host) == (topic.url, topic.key)
        endpoint, key = _published(host)
        event: CloudEvent[Any] = CloudEvent(
            source="/tuneloop/local/lines/support", type="tuneloop.run.accepted",
            subject="lines/support/runs/r1", id="r1.accepted.1", data={"line": "support"},
        )
        EventGridPublisherClient(endpoint, AzureKeyCredential(key)).send([event])
        assert [e["id"] for e in read_events(Path(settings.home), "support")] == ["r1.accepted.1"]
        url = topic.url
    finally:
        host.stop()
    assert host.topic is None
    with pytest.raises(Exception):  # noqa: B017,PT011 -- connection refused, however mapped
        EventGridPublisherClient(url, AzureKeyCredential(key)).send([event], retry_total=0)


def test_a_configured_events_endpoint_is_kept(settings: Settings) -> None:
    """With TUNELOOP_EVENTS_ENDPOINT set (a real topic), the app keeps publishing there."""
    if "events_endpoint" not in Settings.model_fields:
        pytest.skip("TUNELOOP_EVENTS_ENDPOINT is not a setting yet (helper G)")
    configured = settings.model_copy(
        update={"events_endpoint": "https://t.westeurope-1.eventgrid.azure.net/api/events"})
    host = DevHost(configured, platform=HostedFake(), run_timers=False).start()
    try:
        assert getattr(host.settings, "events_endpoint", None) == (
            "https://t.westeurope-1.eventgrid.azure.net/api/events")
        assert host.topic is not None  # still served, for whoever posts to it
    finally:
        host.stop()


def test_a_command_on_the_devhosts_storage_publishes_to_its_topic(settings: Settings) -> None:
    """cli.storage: the home's Azurite (as recorded in devhost.json) brings the devhost's local
    topic as the events settings; another storage, or a configured endpoint, does not."""
    import json

    from cli.storage import storage_settings

    if "events_endpoint" not in Settings.model_fields:
        pytest.skip("TUNELOOP_EVENTS_ENDPOINT is not a setting yet (helper G)")
    home = Path(settings.home)
    home.mkdir(parents=True, exist_ok=True)
    record = {"pid": 1, "azurite_ports": [10000, 10001, 10002],
              "azurite_connection_string": settings.storage_connection_string,
              "events_endpoint": "http://127.0.0.1:4321/api/events", "events_key": "a2V5"}
    (home / "devhost.json").write_text(json.dumps(record), encoding="utf-8")
    found = storage_settings(settings)
    assert getattr(found, "events_endpoint", None) == "http://127.0.0.1:4321/api/events"
    key = getattr(found, "events_key", None)
    assert isinstance(key, SecretStr)
    assert key.get_secret_value() == "a2V5"
    other = settings.model_copy(update={"storage_connection_string": "UseDevelopmentStorage=true"})
    assert getattr(storage_settings(other), "events_endpoint", None) is None
    configured = settings.model_copy(update={"events_endpoint": "https://t/api/events"})
    assert getattr(storage_settings(configured), "events_endpoint", None) == "https://t/api/events"


def test_the_devhost_topic_forwards_to_the_webhook_url(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TUNELOOP_WEBHOOK_URL set: the devhost's topic forwards each event it receives there."""
    from tests.polling import wait_until
    from tests.unit.test_local_topic import _Hook

    hook = _Hook(fail=0)
    monkeypatch.setenv("TUNELOOP_WEBHOOK_URL", hook.url)
    host = DevHost(settings, platform=HostedFake(), run_timers=False).start()
    try:
        topic = host.topic
        assert topic is not None
        event: CloudEvent[Any] = CloudEvent(
            source="/tuneloop/local/lines/support", type="tuneloop.run.promoted",
            subject="lines/support/runs/r1", id="r1.promoted.1", data={"line": "support"},
        )
        EventGridPublisherClient(topic.url, AzureKeyCredential(topic.key)).send([event])
        wait_until(lambda: hook.bodies, timeout=30, what="the event at the webhook")
    finally:
        host.stop()
        hook.close()
    assert [b["id"] for b in hook.bodies] == ["r1.promoted.1"]


def test_the_up_banner_says_where_events_go(settings: Settings) -> None:
    """`tuneloop up`'s banner names the topic URL, the store, the key file and the command."""
    from cli.commands.up import banner

    host = DevHost(settings, platform=HostedFake(), run_timers=False).start()
    try:
        topic = host.topic
        assert topic is not None
        text = banner(host)
        url = topic.url
    finally:
        host.stop()
    home = Path(settings.home)
    assert f"events       {url}" in text
    assert str(home / "events" / "received.jsonl") in text
    assert str(home / "events" / "topic.key") in text
    assert topic.key not in text  # the key itself is never printed
    assert "tuneloop events --follow" in text
