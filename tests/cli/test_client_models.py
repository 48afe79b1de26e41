"""The client's answer models (faceid_client.models) read what the server sends: every field the client declares
is in the server's schema of the same name, typed alike and required alike; what the client does not declare
passes through untouched."""
from __future__ import annotations

import re

import pytest

from app import schemas
from faceid_client import models

CLIENT_MODELS = [m for m in vars(models).values()
                 if isinstance(m, type) and issubclass(m, models.Answer) and m is not models.Answer]


def _type(annotation) -> str:
    """The annotation without module paths: `faceid_client.models.IdentityRef | None` -> `IdentityRef | None`."""
    text = re.sub(r" at 0x[0-9a-f]+", "", str(annotation))  # validators inside Annotated: by name, not address
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text).replace("<class '", "").replace("'>", "")


def test_the_checker_normalises_module_paths():
    assert _type(schemas.IdentifiedFace.model_fields["identity"].annotation) == "IdentityRef | None"
    assert _type(models.IdentifiedFace.model_fields["identity"].annotation) == "IdentityRef | None"
    assert _type(list[float]) == "list[float]"


@pytest.mark.parametrize("model", CLIENT_MODELS, ids=lambda m: m.__name__)
def test_every_declared_field_is_the_servers(model):
    server = getattr(schemas, model.__name__)
    for name, field in model.model_fields.items():
        assert name in server.model_fields, f"{model.__name__}.{name} is not in the server's answer"
        theirs = server.model_fields[name]
        assert _type(field.annotation) == _type(theirs.annotation), (model.__name__, name)
        assert field.is_required() == theirs.is_required(), (model.__name__, name)


def test_fields_the_client_does_not_declare_pass_through():
    answer = schemas.Ready(status="ready", model_version="v1", model_name="m", device="cpu", precision="fp32",
                           threshold=0.5, identities=2, faces=3, indexed_vectors=3, batching=True)
    read = models.Ready.model_validate(answer.model_dump(mode="json"))
    assert read.model_dump(mode="json") == answer.model_dump(mode="json")
    assert read.precision == "fp32" and read.identities == 2
