"""Development tools, beside the product and not in its wheel: working imitations of the
provider APIs (sandbox/), local stacks of redis-server, the sandbox and workers on free
ports (stack.py, sentinel_stack.py), and the demo `make run` plays (demo.py). The tests
and the benchmarks start their processes through them; `flashcall sandbox` and
`flashcall demo` run them from the repository's venv."""
