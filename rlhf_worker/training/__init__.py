"""Plain torch + transformers training code (reward model, SFT, PPO, generation); never imports Django."""
