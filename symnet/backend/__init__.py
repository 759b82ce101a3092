"""Backends: a kernel plan in, a runtime out.

The plan (``symnet.plan.lower``) says nothing about C.  A backend renders it,
builds what it rendered and returns a runtime: an object with the compiled
functions ``forward``, ``loss``, ``loss_grad``, ``step``, ``update`` and
``train`` (the whole-epoch driver), called with opaque buffers the runtime
makes from numpy arrays (``runtime.buffer``).  ``Model`` and ``symnet.runtime.train``
talk to nothing else.

- ``symnet.backend.c.runtime``: the in-process backend (C99 compiled with cffi,
  cached by content); its function signatures are those of the exported
  header (``templates/network.h.j2``, see ``symnet.backend.c.export``).
"""
