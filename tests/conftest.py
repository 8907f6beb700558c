import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WORKSHOP_PROFILE", "smoke")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tmp_outputs(tmp_path, monkeypatch):
    """An empty outputs folder, so tests never touch the attendee's outputs/."""
    out = tmp_path / "outputs"
    monkeypatch.setenv("WORKSHOP_OUTPUTS", str(out))
    return out


@pytest.fixture
def free_port() -> str:
    """A TCP port nobody listens on now, for torchrun's rendezvous (its default, 29500, may be taken or in TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path
