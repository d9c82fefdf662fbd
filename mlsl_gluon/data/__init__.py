"""Dataset readers, label tables and training/evaluation transforms."""
