"""How the workshop starts JupyterLab (``workshop lab``, which ``make workshop`` runs); the browser test uses it too."""

import json
import os
import sys

from workshop_utils.commands.cli import build_parser
from workshop_utils.commands.lab import LAB_DEFAULTS, install_defaults, lab_command


def test_lab_runs_this_interpreter_with_its_token_on(tmp_path):
    cmd = lab_command(tmp_path, port=8123, open_browser=False)
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"], "the kernel must come from the project's environment"
    assert f"--ServerApp.root_dir={tmp_path.resolve()}" in cmd
    assert "--ServerApp.port=8123" in cmd and "--ServerApp.port_retries=0" in cmd and "--no-browser" in cmd
    assert not any("token" in part.lower() for part in cmd), "token authentication must stay on, and off the command line"
    assert ("--allow-root" in cmd) == (os.geteuid() == 0)
    assert "--no-browser" not in lab_command(tmp_path)


def test_defaults_merge_into_the_environment_and_keep_other_settings(tmp_path):
    settings = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    settings.parent.mkdir(parents=True)
    mine = {"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
            "@jupyterlab/apputils-extension:notification": {"doNotDisturbMode": True}}
    settings.write_text(json.dumps(mine))
    assert "no news pop-up" in install_defaults(tmp_path)
    merged = json.loads(settings.read_text())
    assert merged["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
    notification = merged["@jupyterlab/apputils-extension:notification"]
    assert notification["doNotDisturbMode"] is True
    assert notification["fetchNews"] == "false" and notification["checkForUpdates"] is False
    assert install_defaults(tmp_path) == "JupyterLab defaults: already set"
    assert set(LAB_DEFAULTS) <= set(merged)


def test_workshop_lab_is_a_command():
    args = build_parser().parse_args(["lab", "--port", "8124", "--no-browser"])
    assert args.port == 8124 and args.no_browser and args.func.__module__ == "workshop_utils.commands.lab"
