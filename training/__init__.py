"""Fine-tuning FaceNet: triplet loss, online triplet selection, evaluation, checkpoint publishing."""
