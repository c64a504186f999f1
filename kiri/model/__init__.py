"""The atom model: microgpt, as a scalar-autograd reference and as a fast numpy engine."""
