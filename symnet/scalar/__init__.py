"""Scalar calculus: each primitive's sympy form and C spelling, smoothness checks,
the C99 printer of scalar expressions, and how expressions read as text and LaTeX."""
