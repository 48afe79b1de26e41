"""Large JPEGs: detection on a reduced (draft-mode) decode finds the faces the full decode finds, boxes come
back in full-resolution coordinates, and small faces are cropped from the full-resolution image."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from model import align
from model.decode import decode_image
from model.draft import DraftImage, decode_for_detection


def jpeg(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=92, **kwargs)
    return buf.getvalue()


def gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    return Image.fromarray(np.broadcast_to((x + y) / 2, (h, w, 3)).astype(np.uint8))


def test_small_jpeg_and_large_png_are_decoded_whole():
    assert isinstance(decode_for_detection(jpeg(gradient(1500, 1000)), 40_000_000, 1280), Image.Image)
    buf = io.BytesIO()
    gradient(3000, 2000).save(buf, "PNG")
    assert isinstance(decode_for_detection(buf.getvalue(), 40_000_000, 1280), Image.Image)


@pytest.mark.parametrize("orientation", [1, 6])
def test_large_jpeg_is_reduced_keeping_the_full_oriented_size(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg(gradient(4000, 3000), exif=exif.tobytes())
    got = decode_for_detection(data, 40_000_000, 1280)
    full = decode_image(data)
    assert isinstance(got, DraftImage) and got.scale == 2
    assert got.size == full.size
    assert max(got.reduced.size) >= 1280
    assert (got.reduced.width > got.reduced.height) == (full.width > full.height)
    assert not got.decoded_full


def test_pixel_limit_still_applies():
    from model.decode import ImageError

    with pytest.raises(ImageError):
        decode_for_detection(jpeg(gradient(4000, 3000)), 10_000_000, 1280)


@pytest.mark.faces
def test_twelve_megapixel_selfie_same_faces_and_small_faces_from_full_resolution(faces, pipeline):
    """The group selfie upscaled to 12 MP: the same faces as the full decode (6 of its 7 at this size, both
    ways: the copy detected is 1280 px, not the original 600), and every crop whose
    region the reduced decode covers with fewer pixels than the crop comes from the full image."""
    from torchvision.ops import box_iou

    small = decode_image((faces / "multi" / "selfie-many-people.jpg").read_bytes())
    f = (12e6 / (small.width * small.height)) ** 0.5
    data = jpeg(small.resize((round(small.width * f), round(small.height * f)), Image.BICUBIC))
    draft, full = decode_for_detection(data, 40_000_000, pipeline.max_detect_side), decode_image(data)
    assert isinstance(draft, DraftImage)
    got, ref = pipeline.detect([draft])[0], pipeline.detect([full])[0]
    assert len(got) == len(ref) >= 6
    iou = box_iou(torch.from_numpy(got.boxes), torch.from_numpy(ref.boxes)).max(1).values
    assert (iou > 0.85).all()  # a different decode: the face cut by the frame moved most (0.90 measured)
    for face in pipeline.faces(draft, got):
        x1, y1, x2, y2 = align.crop_box(face.box, draft.width, draft.height, 160, 14)
        if min(x2 - x1, y2 - y1) / draft.scale < 160:
            assert np.array_equal(face.crop, align.crop(full, face.box, 160, 14))


@pytest.mark.faces
def test_small_face_in_a_large_photo_is_cropped_from_full_resolution(faces, pipeline):
    face = decode_image(sorted((faces / "lfw").glob("*/*_0001.jpg"))[0].read_bytes())
    canvas = gradient(4000, 3000)
    canvas.paste(face, (2500, 1200))
    data = jpeg(canvas)
    draft, full = decode_for_detection(data, 40_000_000, pipeline.max_detect_side), decode_image(data)
    det = pipeline.detect([draft])[0]
    assert not draft.decoded_full  # detection alone never needs the full decode
    found = pipeline.faces(draft, det)
    assert len(found) == 1 and draft.decoded_full
    assert np.array_equal(found[0].crop, align.crop(full, found[0].box, 160, 14))
    assert 2500 < found[0].box[0] < 2750 and 1200 < found[0].box[1] < 1450
