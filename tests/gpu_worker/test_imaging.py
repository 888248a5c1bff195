from __future__ import annotations

import io
import struct

import pytest
from PIL import Image, ImageOps

from gpu_worker import imaging
from gpu_worker.engine import JobError
from tests.support import images

MP36 = 36_000_000
WITHIN = 4_194_304  # model.comfyui.input_max_pixels' default


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_decode_gives_a_loaded_rgb_image(fmt):
    decoded = imaging.decode(images.person(40, 60, fmt), "person_image", 10**6)
    assert decoded.image.mode == "RGB" and decoded.image.size == (40, 60)
    assert (decoded.width, decoded.height, decoded.orientation, decoded.format) == (40, 60, 1, fmt)


def test_decode_converts_other_modes():
    rgba = images.encode(Image.new("RGBA", (5, 5), (1, 2, 3, 4)), "PNG")
    image = imaging.decode(rgba, "garment_image", 100).image
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (1, 2, 3)  # alpha dropped, as LoadImage does


@pytest.mark.parametrize("data", [images.truncated_jpeg(), b"garbage", images.gif(), images.png_claiming(30000, 30000)])
def test_broken_or_oversized_input_is_invalid_input_naming_the_field(data):
    with pytest.raises(JobError) as caught:
        imaging.decode(data, "garment_image", MP36)
    assert caught.value.code == "invalid_input" and caught.value.message.startswith("garment_image")


@pytest.mark.parametrize("fmt, content_type, pil", [("png", "image/png", "PNG"), ("jpeg", "image/jpeg", "JPEG"),
                                                     ("webp", "image/webp", "WEBP")])
def test_encode(fmt, content_type, pil):
    data, got = imaging.encode(Image.new("RGB", (8, 8), (9, 9, 9)), fmt)
    assert got == content_type and Image.open(io.BytesIO(data)).format == pil


def test_encode_refuses_an_unknown_format():
    with pytest.raises(JobError):
        imaging.encode(Image.new("RGB", (1, 1)), "gif")


def test_a_jpeg_claiming_more_than_its_data_holds_is_invalid_input():
    with pytest.raises(JobError) as caught:
        imaging.decode(images.jpeg_claiming(6000, 6000), "person_image", MP36)
    assert caught.value.code == "invalid_input" and "ends early" in caught.value.message


def test_pillow_never_fills_in_missing_data_even_when_a_library_asked_it_to(monkeypatch):
    from PIL import ImageFile

    # ComfyUI's image helpers switch this process-wide flag on while they retry a file.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(JobError) as caught:
        imaging.decode(images.truncated_jpeg(), "person_image", MP36)
    assert caught.value.code == "invalid_input"


# --- EXIF orientation ----------------------------------------------------------------

RED, GREEN = (255, 0, 0), (0, 255, 0)
# Where the EXIF specification puts the stored image's first row and first column when a
# viewer shows it (orientation: (the side row 0 shows on, the side column 0 shows on)).
ROW_0_AND_COLUMN_0 = {
    1: ("top", "left"), 2: ("top", "right"), 3: ("bottom", "right"), 4: ("bottom", "left"),
    5: ("left", "top"), 6: ("right", "top"), 7: ("right", "bottom"), 8: ("left", "bottom"),
}


def _corner(sides: set[str], size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    return (width - 1 if "right" in sides else 0, height - 1 if "bottom" in sides else 0)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_orientation_shows_the_stored_pixels_where_the_exif_specification_says(orientation):
    # Stored 6x4: red at the start of row 0 (row 0 meets column 0), green at its end.
    stored = Image.new("RGB", (6, 4))
    stored.putpixel((0, 0), RED)
    stored.putpixel((5, 0), GREEN)
    decoded = imaging.decode(images.with_orientation(images.encode(stored, "PNG"), orientation), "person_image", 100)
    row_side, column_side = ROW_0_AND_COLUMN_0[orientation]
    opposite = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}
    size = decoded.image.size
    assert size == ((4, 6) if orientation >= 5 else (6, 4))  # 5 to 8: a quarter turn
    assert (decoded.width, decoded.height, decoded.orientation) == (*size, orientation)
    # Row 0 runs along its side, away from column 0's side.
    assert decoded.image.getpixel(_corner({row_side, column_side}, size)) == RED
    assert decoded.image.getpixel(_corner({row_side, opposite[column_side]}, size)) == GREEN


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_undone_as_comfyuis_load_image_undoes_it(fmt, orientation):
    data = images.with_orientation(images.person(48, 32, fmt), orientation)
    # ComfyUI's LoadImage: ImageOps.exif_transpose, then RGB.
    want = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    got = imaging.decode(data, "person_image", 10**6).image
    assert got.size == want.size and got.tobytes() == want.tobytes()


def test_a_photo_turned_in_the_camera_decodes_to_the_upright_pixels():
    upright = images.noise(30, 40)
    for orientation in range(1, 9):
        decoded = imaging.decode(images.taken_turned(upright, orientation), "person_image", 10**6)
        assert decoded.image.tobytes() == Image.open(io.BytesIO(upright)).convert("RGB").tobytes(), orientation


def _png_with_exif_after_the_pixels(orientation: int) -> bytes:
    """A PNG whose eXIf chunk comes after its IDAT (allowed, and invisible to a header read)."""
    data = images.with_orientation(images.encode(Image.new("RGB", (6, 4)), "PNG"), orientation)
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        chunks.append(data[pos : pos + 12 + length])
        pos += 12 + length
    exif = next(c for c in chunks if c[4:8] == b"eXIf")
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    return data[:8] + b"".join(rest[:-1]) + exif + rest[-1]  # ... IDAT, eXIf, IEND


def test_an_exif_chunk_after_a_pngs_pixels_is_applied_too():
    data = _png_with_exif_after_the_pixels(6)
    assert data.index(b"eXIf") > data.index(b"IDAT")
    decoded = imaging.decode(data, "person_image", 100)
    assert decoded.orientation == 6 and decoded.image.size == (4, 6)


def test_an_xmp_orientation_is_applied_like_exif_transpose_does():
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    data = images.encode(Image.new("RGB", (6, 4)), "JPEG", xmp=xmp)
    decoded = imaging.decode(data, "person_image", 100)
    assert decoded.orientation == 6 and decoded.image.size == (4, 6)


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_an_orientation_outside_1_to_8_leaves_the_image_as_stored(value):
    decoded = imaging.decode(images.with_orientation(images.encode(Image.new("RGB", (6, 4)), "PNG"), value), "p", 100)
    assert decoded.image.size == (6, 4) and (decoded.width, decoded.height, decoded.orientation) == (6, 4, 1)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # pytest resets the module's filter
def test_a_damaged_exif_block_leaves_the_image_as_stored():
    data = images.encode(Image.new("RGB", (6, 4)), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    decoded = imaging.decode(data, "person_image", 100)
    assert decoded.orientation == 1 and decoded.image.size == (6, 4)


# --- large inputs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_6000():
    return {fmt: images.gradient(6000, 6000, fmt) for fmt in ("JPEG", "PNG", "WEBP")}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_an_input_over_the_models_pixels_is_scaled_down_keeping_its_size_on_record(photo_6000, fmt):
    decoded = imaging.decode(photo_6000[fmt], "person_image", MP36, WITHIN)
    assert decoded.image.mode == "RGB" and decoded.image.size == (2048, 2048)
    assert (decoded.width, decoded.height) == (6000, 6000)  # what a `person` output is resized to
    assert decoded.describe() == {"format": fmt, "width": 6000, "height": 6000, "orientation": 1,
                                  "processed": [2048, 2048]}


@pytest.mark.parametrize("mode, fmt", [("RGBA", "PNG"), ("P", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("I;16", "PNG"),
                                       ("CMYK", "JPEG"), ("L", "JPEG"), ("RGBA", "WEBP")])
def test_every_mode_is_scaled_down_to_rgb(mode, fmt):
    image = Image.new("RGB", (300, 200), (200, 100, 50)).convert(mode)
    decoded = imaging.decode(images.encode(image, fmt), "garment_image", MP36, 100 * 100)
    assert decoded.image.mode == "RGB" and decoded.image.size == (122, 81)
    assert (decoded.width, decoded.height) == (300, 200)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_never_at_full_size(photo_6000, monkeypatch):
    resized_from = []
    resize = Image.Image.resize
    def recording(self, *args, **kwargs):
        resized_from.append(self.size)
        return resize(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording)
    imaging.decode(photo_6000["JPEG"], "person_image", MP36, WITHIN)
    imaging.decode(photo_6000["PNG"], "person_image", MP36, WITHIN)
    # libjpeg's DCT scaling gave 1/2 (3000 >= 2048); a PNG has no such thing.
    assert resized_from == [(3000, 3000), (6000, 6000)]


def test_scaling_down_keeps_the_aspect_and_stays_within_the_pixels():
    decoded = imaging.decode(images.gradient(16383, 2197, "PNG"), "person_image", MP36, WITHIN)
    width, height = decoded.image.size
    assert width * height <= WITHIN and (width, height) == (5592, 749)
    assert abs(width / height - 16383 / 2197) < 0.01


def test_an_input_within_the_models_pixels_is_not_resampled():
    data = images.noise(64, 48)
    decoded = imaging.decode(data, "person_image", MP36, 64 * 48)
    assert decoded.image.tobytes() == Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def test_a_large_photo_turned_in_the_camera_is_scaled_and_turned_upright():
    data = images.with_orientation(images.gradient(3000, 2000, "JPEG"), 6)
    decoded = imaging.decode(data, "person_image", MP36, 1_500_000)
    assert (decoded.width, decoded.height) == (2000, 3000)
    assert decoded.image.size == (1000, 1500)


def test_a_truncated_large_jpeg_is_still_invalid_input_when_decoded_at_a_reduced_scale(photo_6000):
    data = photo_6000["JPEG"]
    truncated = data[: len(data) * 2 // 3]  # the data stops two thirds in
    with pytest.raises(JobError) as caught:
        imaging.decode(truncated, "person_image", MP36, WITHIN)
    assert caught.value.code == "invalid_input"


# --- the output's size ---------------------------------------------------------------


def _decoded(width: int, height: int) -> imaging.Decoded:
    return imaging.Decoded(Image.new("RGB", (1, 1)), width, height, 1, "PNG")


def test_a_person_sized_output_is_the_upright_person_images_size():
    made = Image.new("RGB", (112, 144), (10, 20, 30))
    out = imaging.sized_output(made, _decoded(384, 512), "person")
    assert out.size == (384, 512) and out.getpixel((200, 300)) == (10, 20, 30)


def test_a_model_sized_output_is_left_as_made():
    made = Image.new("RGB", (112, 144))
    assert imaging.sized_output(made, _decoded(384, 512), "model") is made


def test_an_output_already_at_the_persons_size_is_not_resampled():
    made = Image.new("RGB", (384, 512))
    assert imaging.sized_output(made, _decoded(384, 512), "person") is made


def test_an_unknown_output_size_is_refused():
    with pytest.raises(JobError) as caught:
        imaging.sized_output(Image.new("RGB", (4, 4)), _decoded(4, 4), "double")
    assert caught.value.code == "backend_error"

