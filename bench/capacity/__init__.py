"""`python -m bench.capacity`: what one verification costs one Redis primary, measured
with 1, 2 and 4 worker groups under more load than they carry, and the ceiling that cost
projects for a primary of one core (docs/scaling.md, bench/capacity/results.json)."""
