"""Scoring a model on tasks: the evaluator, the scorers and the lm-eval probes."""
