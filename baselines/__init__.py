"""The continual-learning methods that ship with clbench (see docs/ for how to add one)."""
