"""Widget plumbing for the live demos in notebook 04, and a clean stop when an artefact is missing.

The model calls stay in the notebook: a demo here only wires a text box and a button to a plain
function that the notebook defines (``callback(text) -> str``, or for the chat a generator
``respond(history, text)`` that yields the answer as it grows), so the same function can be called
directly (nbval does), and ``tests/notebooks/test_workshop_in_browser.py`` types and clicks in a real browser.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable, Iterator


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


def chat_demo(title: str, respond: Callable[[list[dict], str], Iterator[tuple[str, str]]], *, value: str = "",
              placeholder: str = "", rows: int = 3):
    """A chat: the conversation so far, a Textarea, Send and Clear, and the answer shown as it grows.

    ``respond(history, text)`` gets the earlier turns as chat messages ({"role", "content"}) and yields
    ``(answer so far, note)`` each time the answer grows; the last note (tokens/s, say) stays under the
    answer. Send adds the question and the final answer to the history; Clear starts a new conversation.
    Returns the widget.
    """
    import ipywidgets as widgets

    history: list[dict] = []
    box = widgets.Textarea(value=value, placeholder=placeholder, rows=rows, layout=widgets.Layout(width="95%"))
    send = widgets.Button(description="Send", button_style="primary", icon="paper-plane")
    clear = widgets.Button(description="Clear", icon="eraser")
    turns = widgets.HTML()
    answer = widgets.HTML(layout=widgets.Layout(border="1px solid #ddd", padding="4px", width="95%"))
    answer.add_class("chat-answer")

    def show(text: str, note: str = "") -> None:
        small = f"<br><small style='color:#666'>{html.escape(note)}</small>" if note else ""
        answer.value = f"<div style='white-space:pre-wrap'>{html.escape(text)}</div>{small}"

    def on_send(_):
        question, text, note = box.value.strip(), "", ""
        send.disabled = clear.disabled = True
        try:
            for text, note in respond(list(history), question):
                show(text, note)
            history.extend([{"role": "user", "content": question}, {"role": "assistant", "content": text}])
            turns.value = "".join(f"<p><b>{'You' if m['role'] == 'user' else 'Model'}:</b> {html.escape(m['content'])}</p>"
                                  for m in history[:-1])
            box.value = ""
        except Exception as exc:  # keep the demo alive in front of an audience
            show(f"{exc.__class__.__name__}: {exc}")
        finally:
            send.disabled = clear.disabled = False

    def on_clear(_):
        history.clear()
        turns.value, answer.value = "", ""

    send.on_click(on_send)
    clear.on_click(on_clear)
    return widgets.VBox([widgets.HTML(f"<b>{title}</b>"), turns, answer, box, widgets.HBox([send, clear])])
