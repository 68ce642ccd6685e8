"""Images: issue 11's SSRF defect (IPv4-embedding IPv6 forms of loopback, 192.0.0.192) and
hypothesis properties of the image limits.

Properties: any bytes given as an image are either accepted as a real PNG/JPEG/WebP/GIF within
``MAX_IMAGE_PIXELS`` or refused with a 400/413 ``APIError``, never another exception; any string
as a data URL likewise; a generated image is accepted iff its pixel count is within the limit.
"""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from service.errors import APIError
from service.images import check_image, decode_data_url, is_public_address
from service.settings import MAX_IMAGE_PIXELS


@pytest.mark.reliability("SSRF", "IPv4-embedding IPv6 forms of loopback/private, 192.0.0.0/24", "refused")
@pytest.mark.parametrize("address", [
    "::7f00:1", "::ffff:0:7f00:1", "64:ff9b::7f00:1", "2002:7f00:1::1", "192.0.0.192",
    "64:ff9b::a00:1", "2002:a9fe:a9fe::1", "64:ff9b:1::7f00:1", "::a00:1", "2002:c0a8:101::",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2", "::ffff:0:a9fe:a9fe", "192.0.0.1", "240.0.0.1",
])
def test_embedded_and_reserved_forms_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.reliability("SSRF", "NAT64 / 6to4 forms of a public IPv4 address", "allowed")
@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"])
def test_embedded_public_addresses_are_judged_by_their_ipv4(address: str) -> None:
    assert is_public_address(address)


def _check(data: bytes):
    return asyncio.run(check_image(data))


@pytest.mark.reliability("image limits", "property: arbitrary bytes as an image", "accepted image or 400/413, nothing else")
@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_accepted_or_refused_cleanly(data: bytes) -> None:
    try:
        part = _check(data)
    except APIError as exc:
        assert exc.status in (400, 413)
    else:
        assert part.mime_type in {"image/png", "image/jpeg", "image/webp", "image/gif"}


_PNG_HEAD = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()


@pytest.mark.reliability("image limits", "property: arbitrary data: URL strings", "400/413, nothing else")
@settings(max_examples=150, deadline=None)
@given(st.one_of(
    st.text(max_size=200),
    st.builds(lambda mime, b64, rest: f"data:{mime};{b64},{rest}",
              st.sampled_from(["image/png", "image/gif", "image/svg+xml", "text/html", "", "IMAGE/PNG"]),
              st.sampled_from(["base64", "BASE64", "utf8", ""]),
              st.one_of(st.text(max_size=100), st.just(_PNG_HEAD), st.just("====")))))
def test_arbitrary_data_urls_fail_cleanly(url: str) -> None:
    try:
        asyncio.run(decode_data_url(url))
    except APIError as exc:
        assert exc.status in (400, 413)


_FORMATS = st.sampled_from(["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
_MODES = st.sampled_from(["RGB", "L", "RGBA", "P", "1", "CMYK", "I;16", "LA"])


@pytest.mark.reliability("image limits", "property: generated images of any format, mode and size", "accepted iff an allowed format within the pixel limit")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=_FORMATS, mode=_MODES, width=st.integers(1, 64), height=st.integers(1, 64))
def test_generated_images_follow_the_format_rule(fmt: str, mode: str, width: int, height: int) -> None:
    try:
        img = Image.new(mode, (width, height))
        buf = io.BytesIO()
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # Pillow cannot write this mode in this format: nothing to send
    try:
        part = _check(buf.getvalue())
    except APIError as exc:
        assert exc.status == 400 and fmt in ("BMP", "TIFF"), (fmt, mode, exc.message)
    else:
        assert fmt not in ("BMP", "TIFF") and part.mime_type == f"image/{fmt.lower()}"


@pytest.mark.reliability("image limits", "property: pixel count at and past MAX_IMAGE_PIXELS (header-declared)", "413 past the limit, before decoding")
@settings(max_examples=25, deadline=None)
@given(st.integers(MAX_IMAGE_PIXELS // 4096 - 2, MAX_IMAGE_PIXELS // 4096 + 2))
def test_pixel_limit_is_exact(height: int) -> None:
    # A 1-bit PNG 4096 x height compresses to almost nothing: the size is the header's claim.
    buf = io.BytesIO()
    Image.new("1", (4096, height)).save(buf, format="PNG")
    try:
        _check(buf.getvalue())
    except APIError as exc:
        assert exc.status == 413 and 4096 * height > MAX_IMAGE_PIXELS
    else:
        assert 4096 * height <= MAX_IMAGE_PIXELS
