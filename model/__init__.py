"""Face networks and weights: InceptionResnetV1, MTCNN, alignment, pretrained weight registry."""
