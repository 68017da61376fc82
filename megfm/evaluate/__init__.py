"""Downstream evaluation: baselines, subject-level studies, fine-tuning, reconstruction."""
