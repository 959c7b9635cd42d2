"""`make bench`: the project against bare Dramatiq actors, side by side (docs/benchmarks.md)."""
