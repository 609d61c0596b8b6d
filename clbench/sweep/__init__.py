"""`clbench sweep`: a grid of runs (methods x seeds x sequences x any RunConfig field) as
resumable cells, run on this machine, on SLURM (submitit) or on Ray (docs/sweeps.md).

grid.py reads and expands the grid file, with the reference cells its `references` adds;
cells.py keeps each cell's files and runs one cell to the end; worker.py is the process of one
attempt; backends/ decide where cells run; row0.py shares row 0 between cells, and sharing.py
counts the time that sharing row 0 and the references saved; driver.py ties them together and
reports.
"""
