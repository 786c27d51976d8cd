"""The Stage-1 task-type classifier: a bilinear prompt-task matcher (paper section 3.1.2)."""

from finerouter.classify.bilinear import TaskClassifier, assignment_metrics, macro_f1

__all__ = ["TaskClassifier", "assignment_metrics", "macro_f1"]
