"""service.inference.preprocess: bytes -> (224, 224, 3) uint8 RGB, and the errors it may raise."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from service.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.inference.preprocess import PreprocessSpec, check_media_type, preprocess, resize_crop

SPEC = PreprocessSpec()


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def halves(size: tuple[int, int]) -> Image.Image:
    """Left half red, right half blue: shows whether the centre crop is centred."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_every_supported_format_gives_224x224x3_uint8(fmt: str) -> None:
    pixels = preprocess(encode(Image.new("RGB", (500, 375), (10, 200, 30)), fmt), SPEC)
    assert pixels.shape == (224, 224, 3)
    assert pixels.dtype == np.uint8
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (10, 200, 30), atol=4)


def test_the_crop_is_centred_on_a_wide_image() -> None:
    pixels = preprocess(encode(halves((600, 300)), "PNG"), SPEC)
    assert tuple(pixels[112, 10]) == (255, 0, 0)
    assert tuple(pixels[112, 213]) == (0, 0, 255)
    # the colour boundary sits in the middle column, give or take the bilinear blend
    assert tuple(pixels[112, 108]) == (255, 0, 0)
    assert tuple(pixels[112, 115]) == (0, 0, 255)


def test_greyscale_becomes_three_equal_channels() -> None:
    pixels = preprocess(encode(Image.new("L", (300, 300), 77), "PNG"), SPEC)
    assert set(np.unique(pixels)) == {77}


def test_transparency_is_composited_on_white() -> None:
    pixels = preprocess(encode(Image.new("RGBA", (300, 300), (0, 0, 0, 0)), "PNG"), SPEC)
    assert set(np.unique(pixels)) == {255}


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    image = Image.fromarray(np.full((300, 300), 32768, dtype=np.uint16))
    pixels = preprocess(encode(image, "PNG"), SPEC)
    assert set(np.unique(pixels)) == {127}


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    data = encode(halves((400, 300)), "JPEG", exif=exif, quality=95)
    pixels = preprocess(data, SPEC)
    # red was on the left; after a clockwise turn it is on top
    assert pixels[10, 112, 0] > 200
    assert pixels[213, 112, 2] > 200


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", BadImage),
        (b"definitely not an image", BadImage),
        (encode(Image.new("RGB", (300, 300)), "PNG")[:60], BadImage),  # truncated
        (b"%PDF-1.4\n%" + b"\0" * 100, BadImage),
    ],
)
def test_undecodable_bytes_are_bad_images(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        preprocess(data, SPEC)


def test_a_truncated_jpeg_body_is_a_bad_image() -> None:
    data = encode(Image.new("RGB", (800, 600), (1, 2, 3)), "JPEG")
    with pytest.raises(BadImage):
        preprocess(data[: len(data) // 2], SPEC)


def test_too_many_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge, match="300x300 = 90000 pixels"):
        preprocess(encode(Image.new("RGB", (300, 300)), "PNG"), SPEC, max_pixels=50_000)


def test_a_decodable_but_unsupported_format_is_415() -> None:
    with pytest.raises(UnsupportedMediaType):
        preprocess(encode(Image.new("RGB", (64, 64)), "PPM"), SPEC)


@pytest.mark.parametrize(
    "content_type",
    [None, "", "image/jpeg", "image/PNG; charset=binary", "application/octet-stream"],
)
def test_accepted_media_types(content_type: str | None) -> None:
    check_media_type(content_type)


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "image/svg+xml"])
def test_refused_media_types(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_media_type(content_type)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (300, 300), (0, 255, 255, 0))  # pure red in print colours
    pixels = preprocess(encode(cmyk, "JPEG", quality=95), SPEC)
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (255, 0, 0), atol=6)


def test_palette_with_a_transparent_index_is_composited_on_white() -> None:
    image = Image.new("P", (300, 300), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (0, 0, 150, 300))  # left half green, right half transparent black
    pixels = preprocess(encode(image, "PNG", transparency=0), SPEC)
    assert tuple(pixels[112, 10]) == (0, 255, 0)
    assert tuple(pixels[112, 213]) == (255, 255, 255)


def test_an_animated_gif_is_classified_on_its_first_frame() -> None:
    frames = [Image.new("RGB", (300, 300), colour) for colour in ((200, 0, 0), (0, 0, 200))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    pixels = preprocess(data, SPEC)
    assert pixels[..., 0].mean() > 150
    assert pixels[..., 2].mean() < 50


def test_draft_mode_decodes_a_large_jpeg_at_reduced_scale_with_nearly_the_same_pixels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 255, (9, 16, 3), dtype=np.uint8)
    photo = Image.fromarray(smooth).resize((1920, 1080), Image.Resampling.BICUBIC)
    data = encode(photo, "JPEG", quality=95)
    drafted = Image.open(io.BytesIO(data))
    drafted.draft("RGB", (SPEC.resize_size, SPEC.resize_size))
    assert drafted.size == (480, 270)  # libjpeg scaled by 1/4 in the DCT domain; both >= 256
    full = np.asarray(photo.resize((455, 256), Image.Resampling.BILINEAR).crop((115, 16, 339, 240)))
    decoded_sizes: list[tuple[int, int]] = []
    real_load = JpegImageFile.load

    def spy_load(self: JpegImageFile) -> object:
        decoded_sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(JpegImageFile, "load", spy_load)
    pixels = preprocess(data, SPEC)
    assert decoded_sizes[0] == (480, 270)  # preprocess asked for the draft before decoding
    assert np.abs(pixels.astype(int) - full.astype(int)).mean() < 3


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (333, 1000), (120, 90)])
def test_one_box_resample_matches_torchvision_resize_then_centre_crop(
    size: tuple[int, int],
) -> None:
    rng = np.random.default_rng(1)
    texture = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    image = Image.fromarray(texture).resize(size, Image.Resampling.BICUBIC)
    width, height = size
    short = min(width, height)
    resized_size = (int(256 * width / short), int(256 * height / short))
    resized = image.resize(resized_size, Image.Resampling.BILINEAR)
    left, top = round((resized.width - 224) / 2), round((resized.height - 224) / 2)
    reference = np.asarray(resized.crop((left, top, left + 224, top + 224))).astype(int)
    pixels = np.asarray(resize_crop(image, SPEC)).astype(int)
    assert np.abs(pixels - reference).max() <= 1
