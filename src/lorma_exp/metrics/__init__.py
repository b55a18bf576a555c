"""Evaluation metrics: GLUE scores, data-to-text generation scores and maths answer matching."""
