"""regression: a number per text, with a conformal interval."""
