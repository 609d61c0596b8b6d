"""Output from results files: `tables` (`clbench report`), `plots` (`clbench plot`), and the
lm-eval export."""
