"""service.inference.preprocess: bytes -> (224, 224, 3) uint8 RGB, and the errors it may raise."""

from __future__ import annotations

import io
from collections.abc import Callable

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


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "HEIF", "AVIF"])
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
    [
        None,
        "",
        "image/jpeg",
        "image/PNG; charset=binary",
        "application/octet-stream",
        "image/heic",
        "image/HEIF",
        "image/avif",
    ],
)
def test_accepted_media_types(content_type: str | None) -> None:
    check_media_type(content_type)


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "image/svg+xml"])
def test_refused_media_types(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="image/heic, image/heif, image/avif"):
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
    drafted.draft("RGB", (SPEC.resize_size, SPEC.resize_size))  # margin 1
    assert drafted.size == (480, 270)  # libjpeg scaled by 1/4 in the DCT domain; both >= 256
    full = np.asarray(photo.resize((455, 256), Image.Resampling.BILINEAR).crop((115, 16, 339, 240)))
    decoded_sizes: list[tuple[int, int]] = []
    real_load = JpegImageFile.load

    def spy_load(self: JpegImageFile) -> object:
        decoded_sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(JpegImageFile, "load", spy_load)
    pixels = preprocess(data, PreprocessSpec(draft_margin=1.0))
    assert decoded_sizes[0] == (480, 270)  # preprocess asked for the draft before decoding
    assert np.abs(pixels.astype(int) - full.astype(int)).mean() < 3
    # The default policy (docs/decisions/jpeg-draft.md) decodes every pixel.
    decoded_sizes.clear()
    preprocess(data, SPEC)
    assert decoded_sizes[0] == (1920, 1080)


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


# ---------------------------------------------------------------- HEIC/HEIF and AVIF


def rotated_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    return exif.tobytes()


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_rotated_heic_or_avif_is_classified_upright(fmt: str) -> None:
    """pillow-heif turns the EXIF orientation into the HEIF's own rotation (irot), which libheif
    applies; Pillow reads AVIF's irot/imir back as an EXIF orientation. Either way: upright, and
    turned once, not twice."""
    data = encode(halves((400, 300)), fmt, exif=rotated_exif(), quality=95)
    pixels = preprocess(data, SPEC)
    assert pixels[10, 112, 0] > 200  # red, on the left as stored, is on top once upright
    assert pixels[213, 112, 2] > 200


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_transparency_is_composited_on_white(fmt: str) -> None:
    image = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    image.paste((0, 200, 0, 255), (0, 0, 150, 300))  # left half opaque green
    pixels = preprocess(encode(image, fmt, quality=95), SPEC)
    np.testing.assert_allclose(pixels[112, 20], (0, 200, 0), atol=12)
    np.testing.assert_allclose(pixels[112, 200], (255, 255, 255), atol=12)


def test_a_10_bit_heic_is_scaled_to_8_bits_not_clipped() -> None:
    import pillow_heif

    wide = np.full((300, 300, 3), (16384, 32768, 49152), dtype="<u2")  # 1/4, 1/2, 3/4 of range
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(300, 300), data=wide.tobytes())
    out = io.BytesIO()
    heif.save(out, format="HEIF", quality=-1, chroma="444")  # stored as 10 bits, lossless
    assert pillow_heif.open_heif(io.BytesIO(out.getvalue())).info["bit_depth"] == 10
    pixels = preprocess(out.getvalue(), SPEC)
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (64, 128, 191), atol=3)


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF"])
def test_an_embedded_colour_profile_is_not_applied(fmt: str) -> None:
    """As the model was trained (torchvision reads ImageNet's JPEGs without colour management):
    the same pixels with a wide-gamut profile attached decode to the same values."""
    from PIL import ImageCms

    wide_gamut = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    image = Image.new("RGB", (300, 300), (200, 60, 30))
    plain = preprocess(encode(image, fmt, quality=95), SPEC)
    tagged = preprocess(encode(image, fmt, quality=95, icc_profile=wide_gamut), SPEC)
    np.testing.assert_array_equal(plain, tagged)
    np.testing.assert_allclose(tagged.mean(axis=(0, 1)), (200, 60, 30), atol=4)


def test_heic_is_sniffed_without_a_content_type_and_named_in_the_415() -> None:
    pixels = preprocess(encode(Image.new("RGB", (300, 300), (10, 200, 30)), "HEIF"), SPEC)
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (10, 200, 30), atol=4)
    with pytest.raises(UnsupportedMediaType, match="HEIC/HEIF or AVIF"):
        preprocess(encode(Image.new("RGB", (64, 64)), "PPM"), SPEC)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_obey_the_pixel_limit_from_their_header(fmt: str) -> None:
    data = encode(Image.new("RGB", (400, 300)), fmt)
    with pytest.raises(ImageTooLarge, match="400x300 = 120000 pixels"):
        preprocess(data, SPEC, max_pixels=100_000)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_truncated_heic_or_avif_is_a_bad_image(fmt: str) -> None:
    data = encode(Image.new("RGB", (800, 600), (1, 2, 3)), fmt)
    with pytest.raises(BadImage):
        preprocess(data[: len(data) // 2], SPEC)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_lossless_heic_or_avif_decodes_to_the_pngs_pixels(
    photo_bytes: Callable[[str], bytes], fmt: str
) -> None:
    """The colour path (YCbCr matrix, range, chroma siting) is right: at the codecs' highest
    fidelity, the model sees what it sees from a PNG of the same photo, to within 1 level."""
    photo = Image.open(io.BytesIO(photo_bytes("coffee.png"))).convert("RGB")
    reference = preprocess(encode(photo, "PNG"), SPEC).astype(int)
    params: dict[str, object] = (
        {"quality": -1, "chroma": "444", "enc_params": {"preset": "ultrafast"}}
        if fmt == "HEIF"
        else {"quality": 100, "subsampling": "4:4:4", "speed": 10}
    )
    pixels = preprocess(encode(photo, fmt, **params), SPEC).astype(int)
    assert np.abs(pixels - reference).mean() < 1


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_a_palette_with_partial_transparency_is_composited_as_its_rgba_would_be(fmt: str) -> None:
    """Composited in the palette (5 bytes per pixel to decode, not 9), the same pixels as the
    RGBA image composited on white, to within rounding."""
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (60, 80), dtype=np.uint8), "P")
    image = image.resize((400, 300), Image.Resampling.NEAREST)
    image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    alphas = rng.integers(0, 256, 256, dtype=np.uint8).tobytes() if fmt == "PNG" else None
    params = {"transparency": alphas} if alphas else {"transparency": 7}
    data = encode(image, fmt, **params)
    with Image.open(io.BytesIO(data)) as reopened:
        rgba = reopened.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    expected = resize_crop(Image.alpha_composite(white, rgba).convert("RGB"), SPEC)
    pixels = preprocess(data, SPEC).astype(int)
    assert np.abs(pixels - np.asarray(expected, dtype=int)).max() <= 2
