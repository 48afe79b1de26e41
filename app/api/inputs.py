"""Request bodies that carry images: multipart uploads or JSON with base64, parsed into bytes + fields.

FastAPI cannot declare "multipart or JSON" for one route, so these helpers parse the body themselves and
`request_body()` documents both content types in the OpenAPI schema.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser

from app.core.errors import AppError
from app.core.timing import stage
from app.schemas import MAX_LABEL_CHARS, normalize_label


# Starlette spools each uploaded file above 1 MB to a temporary file on disk; every upload is read whole into
# memory right after (`_parse_body`), and bodies are capped by FACEID_MAX_UPLOAD_BYTES before they are parsed
# (BodyLimitMiddleware), so the spool only added a disk write and a read to every large photo.
MultiPartParser.spool_max_size = 64 * 1024 * 1024


def _b64(value: str, field: str) -> bytes:
    try:
        data = base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AppError(422, "invalid_base64", f"field '{field}' is not valid base64") from exc
    if not data:
        raise AppError(422, "empty_image", f"field '{field}' is empty")
    return data


async def parse_body(request: Request, json_model: type[BaseModel], file_fields: dict[str, tuple[int, int]],
                     max_files: int) -> tuple[dict[str, list[bytes]], dict[str, Any]]:
    """(images by field, other fields). `file_fields`: field -> (min count, max count) for multipart. Timed
    as the request's `read` stage (receiving and parsing the body)."""
    with stage("read"):
        return await _parse_body(request, json_model, file_fields, max_files)


async def _parse_body(request: Request, json_model: type[BaseModel], file_fields: dict[str, tuple[int, int]],
                      max_files: int) -> tuple[dict[str, list[bytes]], dict[str, Any]]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            body = json_model.model_validate_json(await request.body())
        except ValidationError as exc:
            raise AppError(422, "invalid_request", "the JSON body does not match the schema",
                           {"errors": exc.errors(include_url=False, include_context=False, include_input=False)})
        fields = body.model_dump()
        images: dict[str, list[bytes]] = {}
        for name in ("image", "image_b", "images"):
            if name in fields and fields[name] is not None:
                raw = fields.pop(name)
                images[name] = [_b64(v, name) for v in (raw if isinstance(raw, list) else [raw])]
        return images, fields
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise AppError(415, "unsupported_media_type",
                       "send multipart/form-data (file uploads) or application/json (base64)")
    try:
        form = await request.form(max_files=max_files, max_fields=32)
    except HTTPException as exc:  # the multipart parser's own refusals
        if "Too many files" in str(exc.detail):
            raise AppError(413, "too_many_files", str(exc.detail)) from exc
        raise AppError(400, "invalid_multipart", f"the multipart body could not be parsed ({exc.detail})") from exc
    images, fields = {}, {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key not in file_fields:
                raise AppError(422, "unexpected_field", f"unexpected file field '{key}'")
            images.setdefault(key, []).append(await value.read())
        else:
            fields[key] = value
    for name, (lo, hi) in file_fields.items():
        n = len(images.get(name, []))
        if n < lo or n > hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise AppError(422 if n < lo else 413, "missing_file" if n < lo else "too_many_files",
                           f"field '{name}' needs {want} file(s), got {n}")
        for i, data in enumerate(images.get(name, [])):
            if not data:
                raise AppError(422, "empty_image", f"file {i} of field '{name}' is empty")
    return images, fields


def form_int(fields: dict, name: str, minimum: int | None = None) -> int | None:
    """An integer field, from a multipart string or an already-validated JSON integer."""
    raw = fields.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise AppError(422, "invalid_field", f"field '{name}' must be an integer") from None
    if minimum is not None and value < minimum:
        raise AppError(422, "invalid_field", f"field '{name}' must be >= {minimum}")
    return value


def form_box(fields: dict, name: str) -> list[float] | None:
    raw = fields.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, list):
        parts = raw
    else:
        parts = str(raw).replace("[", "").replace("]", "").split(",")
    try:
        box = [float(p) for p in parts]
    except (TypeError, ValueError):
        box = []
    if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
        raise AppError(422, "invalid_field", f"field '{name}' must be 'x1,y1,x2,y2' with x2>x1 and y2>y1")
    return box


def form_label(fields: dict) -> str:
    """The multipart `label`, by the same rule as JSON bodies (`schemas.normalize_label`)."""
    label = fields.get("label")
    if label is None:
        raise AppError(422, "invalid_field", f"field 'label' is required (1 to {MAX_LABEL_CHARS} characters)")
    try:
        return normalize_label(label)
    except ValueError as exc:
        raise AppError(422, "invalid_field", f"field 'label': {exc}") from None


def request_body(multipart: dict, json_model: type[BaseModel], description: str) -> dict:
    """openapi_extra for a route that takes either content type."""
    schema = json_model.model_json_schema()
    schema.pop("title", None)
    return {"requestBody": {"required": True, "description": description, "content": {
        "multipart/form-data": {"schema": multipart},
        "application/json": {"schema": schema}}}}


def multipart_schema(files: dict[str, bool], fields: dict[str, dict] | None = None, required=()) -> dict:
    """files: name -> many; fields: extra form fields' schemas."""
    props: dict[str, Any] = {}
    for name, many in files.items():
        item = {"type": "string", "format": "binary"}
        props[name] = {"type": "array", "items": item, "minItems": 1} if many else item
    props.update(fields or {})
    return {"type": "object", "properties": props, "required": list(required)}


def first_image(images: dict[str, list[bytes]], *fields: str) -> bytes | None:
    """The first image of the first of `fields` (a multipart field and its JSON twin, e.g. "file", "image")
    that the request carried; None when it carried none of them."""
    for name in fields:
        if images.get(name):
            return images[name][0]
    return None
