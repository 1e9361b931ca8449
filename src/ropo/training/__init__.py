"""DPO training with RoPO and its baselines through TRL's DPOTrainer."""
