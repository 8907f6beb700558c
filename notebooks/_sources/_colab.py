# %%
# On Google Colab only (anywhere else this cell does nothing). Each Colab notebook gets a fresh machine, so
# this cell fetches the workshop there, installs its pinned packages (keeping the CUDA build of torch that
# Colab ships: the pin is the CPU wheel) and asks for one restart; after that it only changes directory.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess
    from pathlib import Path

    REPO_URL = os.environ.get("WORKSHOP_REPO_URL", "")  # your instructor's copy, e.g. "https://github.com/ORG/REPO.git"
    HOME = Path(os.environ.get("WORKSHOP_HOME", "/content/workshop"))
    if not (HOME / "pyproject.toml").is_file():
        if not REPO_URL:
            raise SystemExit("Set REPO_URL in the first code cell to the workshop's git address (ask your instructor), then run it again.")
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", REPO_URL, str(HOME)], check=True)
    if not (HOME / ".colab-installed").is_file():
        pins = [line for line in (HOME / "requirements.txt").read_text().splitlines() if not line.startswith("torch==")]
        (HOME / ".colab-requirements.txt").write_text("\n".join(pins) + "\n")
        pip = [sys.executable, "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "-r", str(HOME / ".colab-requirements.txt"), "-c", str(HOME / "constraints.txt")], check=True)
        subprocess.run([*pip, "--no-deps", "-r", str(HOME / "requirements-nodeps.txt")], check=True)
        subprocess.run([*pip, "--no-deps", "-e", str(HOME)], check=True)
        (HOME / ".colab-installed").touch()
        raise SystemExit("Installed. Now Runtime → Restart session, then run this notebook again from the top.")
    os.chdir(HOME / "notebooks")
