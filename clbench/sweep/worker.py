"""The process of one attempt at one cell:

    python -m clbench.sweep.worker SWEEP_DIR CELL_ID --threads N

It runs the cell's RunConfig with the ordinary runner, resuming the run folder if an earlier
attempt left one; a reference cell then stores its score in the sweep's reference folder. An
error is also written to <sweep>/cells/<id>.error.json for the sweep's record; a ClbenchError
(bad input) is marked as not worth retrying. SIGTERM or SIGUSR1 (preemption) stop the run
between steps with exit code 75, which the sweep treats as interrupted, not failed; Ctrl-C
(SIGINT) stops it there too, with exit code 130, and the sweep stops.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clbench.sweep.worker")
    parser.add_argument("root", type=Path)
    parser.add_argument("cell")
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent()

    import torch

    from clbench.config import RunConfig
    from clbench.errors import ClbenchError
    from clbench.results.io import read_json, write_json
    from clbench.sweep.cells import SweepFolder
    from clbench.training.references import compute_reference
    from clbench.training.runner import run, run_dir_of
    from clbench.training.signals import EXIT_PREEMPTED, Preempted, preemptible

    torch.set_num_threads(args.threads)
    folder = SweepFolder(args.root)
    spec = read_json(folder.spec(args.cell))
    include, reference = tuple(spec["include"]), spec.get("reference")

    def report(error: str, retry: bool) -> None:
        if int(os.environ.get("RANK", "0")) == 0:  # under `accelerate launch`, one report
            write_json(folder.error(args.cell), {"error": error, "retry": retry})

    try:
        with preemptible():
            config = RunConfig.from_dict(spec["config"], origin=str(folder.spec(args.cell)))
            # Row 0 is shared between the cells that would compute the same (clbench.sweep.row0).
            if reference is not None:
                key, where = reference["key"], Path(reference["folder"])
                compute_reference(config, key, where, include, row0_cache=folder.row0())
            else:
                resume = (run_dir_of(config) / "config.json").exists()
                run(config, resume=resume, include=include, row0_cache=folder.row0())
    except Preempted as err:  # finished stages are saved; the next attempt resumes
        stopped = "preempted" if err.exit_code == EXIT_PREEMPTED else "interrupted"
        report(f"{stopped} by {err}", True)
        return err.exit_code
    except Exception as err:
        report(f"{type(err).__name__}: {err}", not isinstance(err, ClbenchError))
        raise
    return 0


def _die_with_parent() -> None:
    """End with the process that started this one (Linux): a killed worker's cell must not
    keep writing its run folder while the cell's next attempt starts."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
