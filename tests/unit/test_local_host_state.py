"""``<home>/devhost.json`` is read by one function: a corrupt file is one clear ConfigError."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.platform.local.azurite import HostState, local_storage, read_host_state

CONN = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"


def write(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "devhost.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_is_no_state(tmp_path: Path) -> None:
    """A home without devhost.json has no recorded devhost: None, and no local storage."""
    assert read_host_state(tmp_path) is None
    assert local_storage(tmp_path) is None


def test_a_well_formed_file_is_parsed(tmp_path: Path) -> None:
    """Every recorded field comes back typed."""
    write(tmp_path, json.dumps({
        "pid": 123, "started": "2026-01-01T00:00:00+00:00", "azurite_pid": 456,
        "azurite_ports": [10000, 10001, 10002], "azurite_connection_string": CONN,
    }))
    assert read_host_state(tmp_path) == HostState(
        path=tmp_path / "devhost.json", pid=123, started="2026-01-01T00:00:00+00:00",
        azurite_pid=456, azurite_ports=(10000, 10001, 10002), azurite_connection_string=CONN,
    )


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("{bad", "not JSON"),
        ("", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"pid": "123"}', "pid must be a positive integer"),
        ('{"pid": true}', "pid must be a positive integer"),
        ('{"pid": -4}', "pid must be a positive integer"),
        ('{"azurite_pid": 1.5}', "azurite_pid must be a positive integer"),
        (json.dumps({"azurite_ports": [10000, 10001], "azurite_connection_string": CONN}),
         "azurite_ports must be 3 port numbers"),
        (json.dumps({"azurite_ports": ["a", 1, 2], "azurite_connection_string": CONN}),
         "azurite_ports must be 3 port numbers"),
        (json.dumps({"azurite_ports": [1, 2, 70000], "azurite_connection_string": CONN}),
         "azurite_ports must be 3 port numbers"),
        (json.dumps({"azurite_ports": [1, 2, 3], "azurite_connection_string": 7}),
         "azurite_connection_string must be a string"),
        (json.dumps({"azurite_ports": [1, 2, 3]}), "come together"),
        ('{"started": 5}', "started must be a time string"),
    ],
)
def test_a_corrupt_file_is_one_config_error_naming_it(tmp_path: Path, text: str, what: str) -> None:
    """Bad JSON or a field of the wrong type: ConfigError naming the file, the problem, the fix."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_host_state(tmp_path)
    message = str(info.value)
    assert str(path) in message
    assert what in message
    assert "delete the file" in message
    assert "\n" not in message
    with pytest.raises(ConfigError):
        local_storage(tmp_path)  # the readers of the file go through the same function


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A devhost.json that is not a readable file (here: a folder) is named, not a traceback."""
    (tmp_path / "devhost.json").mkdir(parents=True)
    with pytest.raises(ConfigError, match="cannot read"):
        read_host_state(tmp_path)


def test_a_recorded_azurite_that_is_not_running_is_a_config_error(tmp_path: Path) -> None:
    """A stale record (the Azurite's pid is gone, its ports closed) says to start `tuneloop up`."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # free once the socket is closed below
    dead = _dead_pid()
    write(tmp_path, json.dumps({
        "pid": dead, "azurite_pid": dead, "azurite_ports": [closed, closed, closed],
        "azurite_connection_string": CONN,
    }))
    with pytest.raises(ConfigError, match=r"is not running.*tuneloop up"):
        local_storage(tmp_path)


def test_a_file_without_azurite_means_no_local_storage(tmp_path: Path) -> None:
    """A devhost that ran on configured storage (or stopped cleanly) records no Azurite."""
    write(tmp_path, json.dumps({"pid": os.getpid(), "started": "2026-01-01T00:00:00+00:00"}))
    assert local_storage(tmp_path) is None


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)
