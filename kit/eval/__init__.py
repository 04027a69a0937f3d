"""Evaluation: accuracy, pass@k, maj@k and paired comparisons, measured the same way before and after training (`kit eval`, `kit compare`)."""
