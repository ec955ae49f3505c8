"""Training: losses, batches, the shared loop, and the teacher and student stages."""
