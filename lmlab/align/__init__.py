"""lmlab.align: post-training against preferences and rewards (filled in below)."""
