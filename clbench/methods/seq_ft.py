from clbench.methods import Method


class SeqFT(Method):
    """Sequential fine-tuning: train on each task in turn with nothing to prevent forgetting.

    The lower bound of continual learning. No task identity at inference, no extra memory.
    """

    name = "seq-ft"
