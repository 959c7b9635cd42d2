"""`flashcall api`: the producer contract over HTTP, with API keys (worker/api/app.py)."""
