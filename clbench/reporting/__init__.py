"""Reading results files: tables with statistics, figures, lm-eval export."""
