"""Every derivative, once: local derivatives by sympy, chained by named deltas."""
