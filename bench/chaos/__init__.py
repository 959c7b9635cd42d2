"""`make chaos`: fault scenarios against the real worker, Redis and sandbox."""
