"""The derivation for people: formulas (text and LaTeX), the explicit numpy form,
the summary of what a network costs, the network's graph drawn."""
