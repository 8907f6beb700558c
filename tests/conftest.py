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
def accelerate_two_cpu_processes() -> list[str]:
    """``accelerate launch`` of ``workshop_utils.cli`` in two processes on this machine's CPUs.

    accelerate's ``--cpu`` launcher needs mpirun for several processes; ``--multi_gpu`` starts them with
    torchrun, and without CUDA each process joins a CPU (gloo) process group. The rendezvous gets a port
    nobody listens on now: torchrun's default, 29500, may be taken or in TIME_WAIT.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    return [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "workshop_utils.cli"]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path
