"""Build and development tooling: building and cleaning notebooks (``nbbuild``, ``nbclean``), the set-up check
``make setup`` ends with (``setup_check``), checking the time estimates against a run (``estimates_check``).
Tooling is the top layer: it may use the commands and the helpers; nothing in the package imports it.
"""
