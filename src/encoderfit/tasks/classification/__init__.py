"""classification: one class per text or pair; SetFit (model.head embedding)."""
