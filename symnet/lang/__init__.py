"""The language: inputs, layers (each a formula), convolution and pooling, merges,
recurrence, the composition graph and the network declaration."""
