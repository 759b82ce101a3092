"""What the user holds: the last stage of the pipeline.

``symnet.api.network.Network`` is the declaration of ``symnet.lang.dsl`` with the
calls that run the later stages on it (``compile``, ``formulas``,
``summary``), and ``symnet.load``; ``symnet.api.model.Model`` is the compiled
core of ``symnet.runtime.model`` with ``fit``, ``predict``, ``evaluate``, ``save``,
``export_c`` and ``summary``.  Every stage before this one imports only
earlier stages; these two classes are where the pipeline is put together.
"""
