"""Labeling app: projects, prompts, completions, ranking tasks, assignments and annotations."""
