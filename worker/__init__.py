"""flashcall-router: phone verification through several call providers, driven through Redis."""

__version__ = "0.1.0"
