"""Training: (Extended) Progressive Shrinking of super-networks, per-round adaptation, fine-tuning."""
