"""``ropo demo``: RoPO vs DPO vs LoRA on the embedded default, evaluated and reported."""
