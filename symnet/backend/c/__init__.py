"""The C backend: render the plan through the Jinja templates, build it with cffi
into the content-hashed cache, measure the machine, and hand back a runtime."""
