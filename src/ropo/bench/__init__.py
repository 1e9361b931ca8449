"""``ropo bench``: step time and peak memory of RoPO against PEFT's tuners, in one run."""
