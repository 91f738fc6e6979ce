"""multi-label: a set of labels per text."""
