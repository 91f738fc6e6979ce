"""extractive question answering: windows, spans, no-answer decision, SQuAD metrics."""
