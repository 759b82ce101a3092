"""The tensor IR: nodes with named index spaces and affine index maps."""
