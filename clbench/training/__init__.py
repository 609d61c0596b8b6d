"""The run: the stage loop, the training step and model loading."""
