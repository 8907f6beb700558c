"""JupyterLab as the workshop opens it: ``make workshop`` and the browser test both start it from here.

* the project's own interpreter (``sys.executable``: the ``.venv`` that ``make setup`` built), so the
  notebooks' kernel is the environment whose versions notebook 00 checks;
* token authentication stays on (the server makes one, or takes ``JUPYTER_TOKEN``); nothing here prints it;
* JupyterLab's "get notified about Jupyter news?" toast is answered "never" once, in the environment's
  settings: it asks for a website this room may not reach and covers the demo buttons while an
  instructor presents.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..paths import write_json_atomic

# written into <environment>/share/jupyter/lab/settings/overrides.json (JupyterLab's defaults for this
# environment only; an attendee's own settings still win)
LAB_DEFAULTS = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def install_defaults(prefix: str | os.PathLike = sys.prefix) -> str:
    """Merge ``LAB_DEFAULTS`` into the environment's overrides.json; returns a line saying what it did."""
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    merged = {**current, **{key: {**current.get(key, {}), **value} for key, value in LAB_DEFAULTS.items()}}
    if merged == current:
        return "JupyterLab defaults: already set"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, merged)
    return "JupyterLab defaults: no news pop-up (overrides.json in this environment)"


def lab_command(root: str | os.PathLike, *, port: int | None = None, open_browser: bool = True) -> list[str]:
    """The command line that serves ``root`` (the notebooks folder) with this interpreter's JupyterLab."""
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={Path(root).resolve()}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and lab servers often run as root
        cmd.append("--allow-root")
    if port is not None:
        cmd += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1"]
    if not open_browser:
        cmd.append("--no-browser")
    return cmd


def add_arguments(parser) -> None:
    parser.add_argument("--notebooks", default=None, help="folder to serve (default: the repository's notebooks/)")
    parser.add_argument("--port", type=int, default=None, help="port (default: JupyterLab's choice, from 8888)")
    parser.add_argument("--no-browser", action="store_true", help="print the address instead of opening a browser")


def run(args) -> int:
    from ..paths import repo_root

    cmd = lab_command(args.notebooks or repo_root() / "notebooks", port=args.port, open_browser=not args.no_browser)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)  # JupyterLab takes over this process: Ctrl-C stops it as usual
    return 0  # not reached
