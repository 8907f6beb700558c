"""Widget plumbing for the live demos in notebook 04, and a clean stop when an artefact is missing.

The model calls stay in the notebook: a demo here only wires a text box and a button to a plain
function ``callback(text) -> str`` that the notebook defines, so the same function can be called
directly (nbval does), and ``tests/notebooks/test_workshop_in_browser.py`` types and clicks in a real browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def require(path: Path | str, notebook: str) -> Path:
    """``results.require_artifact``: the path, or a one-sentence error naming what makes it."""
    from .results import require_artifact

    return require_artifact(path, notebook)


def text_demo(title: str, callback: Callable[[str], str], *, value: str = "", placeholder: str = "",
              button: str = "Run", rows: int = 3):
    """A Textarea, a button and an output area; clicking shows ``callback(text)``. Returns the widget."""
    import ipywidgets as widgets

    box = widgets.Textarea(value=value, placeholder=placeholder, rows=rows,
                           layout=widgets.Layout(width="95%"))
    run = widgets.Button(description=button, button_style="primary", icon="play")
    out = widgets.Output(layout=widgets.Layout(border="1px solid #ddd", padding="4px", width="95%"))

    def on_click(_):
        out.clear_output()
        with out:
            run.disabled = True
            try:
                print(callback(box.value))
            except Exception as exc:  # keep the demo alive in front of an audience
                print(f"{exc.__class__.__name__}: {exc}")
            finally:
                run.disabled = False

    run.on_click(on_click)
    return widgets.VBox([widgets.HTML(f"<b>{title}</b>"), box, run, out])
