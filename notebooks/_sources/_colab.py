# %%
# On Google Colab only (anywhere else this cell does nothing). Each Colab notebook gets a fresh machine, so
# this cell fetches the workshop there, installs the pinned packages the notebooks import and asks for one
# restart; after that it only changes directory. Colab's own runtime stays as Colab ships it: the cell
# leaves its kernel, Jupyter server, widgets and CUDA build of torch alone.
import sys

if "google.colab" in sys.modules:
    import os
    import re
    import subprocess
    from importlib import metadata
    from pathlib import Path

    REPO_URL = os.environ.get("WORKSHOP_REPO_URL", "")  # your instructor's copy, e.g. "https://github.com/ORG/REPO.git"
    HOME = Path(os.environ.get("WORKSHOP_HOME", "/content/workshop"))
    if not (HOME / "pyproject.toml").is_file():
        if not REPO_URL:
            raise SystemExit("Set REPO_URL in the first code cell to the workshop's git address (ask your instructor), then run it again.")
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", REPO_URL, str(HOME)], check=True)
    if not (HOME / ".colab-installed").is_file():
        def pins(file):  # {"package": "package==version"} for the exact pins in one of the workshop's files
            lines = [line.split("#")[0].strip() for line in (HOME / file).read_text().splitlines()]
            return {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower(): line for line in lines if "==" in line}

        on_colab = {re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower() for dist in metadata.distributions()}
        colab_keeps = {"torch", "pandas"}  # Colab's CUDA build of torch; google-colab pins its own pandas
        # Install what the notebooks import (requirements.txt), never the developer tools (requirements-dev.txt).
        # The full lock (constraints.txt) holds only packages Colab lacks: pip changes one of Colab's only when a pin needs it.
        install = [pin for name, pin in pins("requirements.txt").items() if name not in colab_keeps]
        leave = colab_keeps | on_colab | set(pins("requirements-dev.txt"))
        lock = [pin for name, pin in pins("constraints.txt").items() if name not in leave]
        (HOME / ".colab-requirements.txt").write_text("\n".join(install) + "\n")
        (HOME / ".colab-constraints.txt").write_text("\n".join(lock) + "\n")
        pip = [sys.executable, "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "-r", str(HOME / ".colab-requirements.txt"), "-c", str(HOME / ".colab-constraints.txt")], check=True)
        subprocess.run([*pip, "--no-deps", "-r", str(HOME / "requirements-nodeps.txt")], check=True)
        subprocess.run([*pip, "--no-deps", "-e", str(HOME)], check=True)
        (HOME / ".colab-installed").touch()
        raise SystemExit("Installed. Now Runtime → Restart session, then run this notebook again from the top.")
    os.chdir(HOME / "notebooks")
