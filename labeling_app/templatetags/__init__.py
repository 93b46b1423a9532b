"""Template tag libraries of the labeling app."""
