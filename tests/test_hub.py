"""The Hub lookup is bounded as a whole, offline says so, and a broken cache entry is named (issue 9: 1, 12)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from accelport.errors import WeightsError
from accelport.hub import download_from_hub
from accelport.models import load_model

from checkpoints import HUB_ID, write_hf_cache

SERVER_LIFETIME_S = 30.0  # the servers stop by themselves even if a test never tells them to


@contextmanager
def local_server(handle: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and gives each to ``handle``; yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        connections = []
        end = time.monotonic() + SERVER_LIFETIME_S
        while not stop.is_set() and time.monotonic() < end:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connections.append(connection)
            threading.Thread(target=handle, args=(connection, stop), daemon=True).start()
        stop.set()
        for connection in connections:
            connection.close()
        listener.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        server.join(5)


def never_answers(connection: socket.socket, stop: threading.Event) -> None:
    stop.wait(SERVER_LIFETIME_S)


def drips(connection: socket.socket, stop: threading.Event) -> None:
    """Answers a status line, then one header byte every 0.1 s: every read succeeds, the answer never ends."""
    try:
        connection.recv(4096)
        connection.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        for _ in range(int(SERVER_LIFETIME_S / 0.1)):
            if stop.wait(0.1):
                break
            connection.sendall(b"a")
    except OSError:
        pass


@pytest.mark.parametrize("handler", [never_answers, drips], ids=["silent", "slow-drip"])
def test_a_hub_that_accepts_but_does_not_answer_is_given_up_at_the_timeout(monkeypatch, caplog, handler):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    # huggingface_hub read the variable when it was imported: set in the shell that ran pytest (README suggests it
    # to skip the Hub probe), it kept the library offline whatever the test's environment
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with local_server(handler) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        started = time.monotonic()
        with caplog.at_level(logging.INFO):
            assert download_from_hub(HUB_ID, timeout_s=1.0) is None
        elapsed = time.monotonic() - started
    assert "did not answer within 1.0s" in caplog.text
    assert elapsed < 10  # a hang bound (minutes before the fix), not a speed measurement


def test_offline_mode_says_offline_not_unreachable(caplog):
    with caplog.at_level(logging.INFO):
        assert load_model(hub_timeout_s=3.0).weights.source == "random-init"
    assert "HF_HUB_OFFLINE is set" in caplog.text
    assert "not reachable" not in caplog.text


def test_a_dangling_model_safetensors_link_in_the_cache_is_named(tmp_path, monkeypatch, seeded_state):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    link = write_hf_cache(tmp_path, seeded_state)
    link.resolve().unlink()  # the blob is gone, the snapshot's symlink stays
    with pytest.raises(WeightsError, match=f"{link}: the HF cache entry is a dangling symlink"):
        load_model(HUB_ID)
