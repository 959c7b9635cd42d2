"""Logs: structured lines (structured.py) with phone numbers masked and codes hidden by what
they are (redaction.py). Every layer above the core may log."""
