"""The `workshop` commands (``cli`` dispatches): each parses its options, turns them into a changed profile,
calls the notebook's recipe (``workshop_utils.recipes``) and records what it measured.

Layers: tooling may import commands; commands import recipes and helpers; recipes import helpers; helpers
import none of them (``tests/static/test_import_graph.py``).
"""
