"""The neutral kernel plan: buffers, operations, fusion, order. No ISA, no C."""
