"""The Textual app that shows training live and steers it (``tuinet`` / ``tuinet train`` on a terminal)."""
