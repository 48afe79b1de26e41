"""The faceid client: the `faceid` command (faceid_client.cli), the Python client (FaceIDClient), bulk enroll and
identify (faceid_client.bulk), gallery archives (faceid_client.archive). Needs no torch and no server code."""
from faceid_client.client import DEFAULT_URL, FaceIDClient, FaceIDError

__all__ = ["DEFAULT_URL", "FaceIDClient", "FaceIDError"]
