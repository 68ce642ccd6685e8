"""Image URLs from chat requests → validated ``ImagePart`` bytes.

* ``data:image/<png|jpeg|webp|gif>;base64,...`` URLs are always accepted.
* ``http(s)://`` URLs only when a ``RemoteImageFetcher`` is configured (``--remote-images``). SSRF
  protection: scheme http/https only, no userinfo, optional host allow-list; the host is resolved
  once and *every* resolved address must be public (no private, loopback, link-local, CGNAT,
  multicast, reserved or cloud-metadata address); the connection goes to that checked address
  (Host header and TLS SNI keep the name, so DNS rebinding cannot swap it); redirects are
  followed by hand, at most ``MAX_REDIRECTS``, each hop re-checked the same way; the body is
  streamed with a byte cap and the whole fetch has a time cap.
* Every image is opened with Pillow (off the event loop) to check the real format and the pixel
  count before anything else sees it.

Errors never echo the URL back: 400 (bad or refused URL, failed fetch), 413 (too big).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin

import httpx
from PIL import Image

from service.engines.base import ImagePart
from service.errors import InvalidRequest, PayloadTooLarge
from service.settings import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
ALLOWED_MIME_TYPES = frozenset(_FORMATS.values())
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Cloud metadata endpoints that are not already non-global (AWS IPv6, Alibaba).
_METADATA = frozenset(map(ipaddress.ip_address, ["fd00:ec2::254", "100.100.100.200"]))
# IPv4 ranges ``ipaddress`` (3.11) calls global that no image host lives in: IETF protocol
# assignments (192.0.0.192 among them), and this-network / reserved blocks, to be sure.
_V4_REFUSED = tuple(map(ipaddress.IPv4Network, ["0.0.0.0/8", "192.0.0.0/24", "240.0.0.0/4"]))
# IPv6 forms that carry an IPv4 address in their last 32 bits: IPv4-translated (RFC 2765),
# NAT64 well-known and local-use prefixes (RFC 6052, RFC 8215).
_V6_EMBEDS_LAST_32 = tuple(map(ipaddress.IPv6Network, [
    "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48",
]))
# Refused whatever they carry: IPv4-compatible (deprecated, ::a.b.c.d) and Teredo tunnels.
_V6_REFUSED = tuple(map(ipaddress.IPv6Network, ["::/96", "2001::/32"]))

Resolver = Callable[[str, int], Awaitable[list[str]]]
AddressPolicy = Callable[[str], bool]


def _bad(message: str, code: str = "invalid_image") -> InvalidRequest:
    return InvalidRequest(message, param="image_url", code=code)


async def check_image(data: bytes) -> ImagePart:
    """Validate encoded image bytes; raises 400/413. Decoding runs in a worker thread."""
    if len(data) > MAX_IMAGE_BYTES:
        raise PayloadTooLarge(f"image larger than {MAX_IMAGE_BYTES} bytes", param="image_url")
    return await asyncio.to_thread(_inspect, data)


def _inspect(data: bytes) -> ImagePart:
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise PayloadTooLarge(
                    f"image has more than {MAX_IMAGE_PIXELS} pixels", param="image_url"
                )
            img.verify()  # structure and checksums; leaves the image unusable, so reopen:
        with Image.open(io.BytesIO(data)) as img:
            # A full decode here means a truncated or corrupt image is a 400 for its sender,
            # never a failure of the shared classifier batch it would have joined.
            img.load()
    except PayloadTooLarge:
        raise
    except Image.DecompressionBombError:  # Pillow's own size guard fired first (> 2x its limit)
        raise PayloadTooLarge(f"image has more than {MAX_IMAGE_PIXELS} pixels", param="image_url") from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for corrupt files
        raise _bad("image could not be decoded") from None
    if fmt not in _FORMATS:
        raise _bad("unsupported image format (use PNG, JPEG, WebP or GIF)")
    return ImagePart(data=data, mime_type=_FORMATS[fmt])


async def decode_data_url(url: str) -> ImagePart:
    """``data:image/...;base64,...`` → validated image."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:"):
        raise _bad("malformed data URL")
    meta = header[5:].split(";")
    if "base64" not in meta[1:]:
        raise _bad("data URLs must be base64-encoded")
    if meta[0].lower() not in ALLOWED_MIME_TYPES:
        raise _bad("unsupported image MIME type (use PNG, JPEG, WebP or GIF)")
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise PayloadTooLarge(f"image larger than {MAX_IMAGE_BYTES} bytes", param="image_url")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("data URL is not valid base64") from None
    return await check_image(data)


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses that are not metadata endpoints.

    An IPv6 address that carries an IPv4 address (mapped, translated, NAT64, 6to4) is judged by
    the IPv4 address inside it, since that is where the packets end up; the deprecated
    IPv4-compatible form and Teredo are refused outright (issue 11: ``::7f00:1``,
    ``::ffff:0:7f00:1``, ``64:ff9b::7f00:1`` and ``2002:7f00:1::1`` all reach 127.0.0.1, and
    ``ipaddress`` calls each of them global)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _V6_REFUSED):
            return False
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return _public(inner)
    return _public(ip)


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in net for net in _V4_REFUSED):
        return False
    return ip.is_global and not ip.is_multicast and ip not in _METADATA


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address routes to, for the forms that embed one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _V6_EMBEDS_LAST_32):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


async def resolve_host(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (the system resolver, off the event loop)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class RemoteImageFetcher:
    """Fetch http(s) images with the SSRF rules of the module docstring.

    ``resolver`` and ``address_ok`` exist so tests can point names at a local server; production
    uses ``resolve_host`` and ``is_public_address``.
    """

    def __init__(
        self,
        allowed_hosts: tuple[str, ...] = (),
        max_bytes: int = MAX_IMAGE_BYTES,
        timeout_s: float = 5.0,
        *,
        resolver: Resolver = resolve_host,
        address_ok: AddressPolicy = is_public_address,
        verify_tls: bool = True,
    ) -> None:
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)
        self.max_bytes = min(max_bytes, MAX_IMAGE_BYTES)
        self.timeout_s = timeout_s
        self._resolve = resolver
        self._address_ok = address_ok
        self._verify = verify_tls

    async def fetch(self, url: str) -> ImagePart:
        try:
            async with asyncio.timeout(self.timeout_s):
                data = await self._follow(url)
        except TimeoutError:
            raise _bad("timed out fetching the image", code="image_fetch_timeout") from None
        return await check_image(data)

    async def _follow(self, url: str) -> bytes:
        async with httpx.AsyncClient(follow_redirects=False, verify=self._verify) as client:
            for _ in range(MAX_REDIRECTS + 1):
                target, host, address = await self._check_url(url)
                request = client.build_request(
                    "GET",
                    target.copy_with(host=address),
                    headers={"Host": target.netloc.decode("ascii"), "Accept": "image/*"},
                    extensions={"sni_hostname": host} if target.scheme == "https" else {},
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError:
                    raise _bad("could not fetch the image", code="image_fetch_failed") from None
                async with _closing(response):
                    if response.status_code in _REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise _bad("image redirect without a location", "image_fetch_failed")
                        url = urljoin(str(target), location)
                        continue
                    if response.status_code != 200:
                        raise _bad(
                            f"image fetch answered HTTP {response.status_code}",
                            code="image_fetch_failed",
                        )
                    return await self._read_capped(response)
        raise _bad(f"more than {MAX_REDIRECTS} redirects", code="image_fetch_failed")

    async def _check_url(self, url: str) -> tuple[httpx.URL, str, str]:
        """Validate one hop; returns (url, host name, the checked address to connect to)."""
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, ValueError):
            raise _bad("malformed image URL") from None
        host = (target.host or "").lower()
        if target.scheme not in ("http", "https") or not host:
            raise _bad("image URLs must be http(s) or data: URLs")
        if target.userinfo:
            raise _bad("image URLs must not contain credentials")
        if self.allowed_hosts and not any(_host_matches(host, a) for a in self.allowed_hosts):
            raise _bad("image host is not on the allow-list", code="image_host_refused")
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            addresses = await self._resolve(host, port)
        except OSError:
            raise _bad("image host does not resolve", code="image_fetch_failed") from None
        if not addresses or not all(self._address_ok(a) for a in addresses):
            raise _bad("image host resolves to a non-public address", code="image_host_refused")
        return target, host, addresses[0]

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise PayloadTooLarge(f"remote image larger than {self.max_bytes} bytes", param="image_url")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadTooLarge(
                    f"remote image larger than {self.max_bytes} bytes", param="image_url"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _host_matches(host: str, allowed: str) -> bool:
    """Exact name, or any subdomain of ``.suffix`` entries."""
    if allowed.startswith("."):
        return host.endswith(allowed) or host == allowed[1:]
    return host == allowed


class _closing:
    """``async with`` that closes a streamed response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    async def __aenter__(self) -> httpx.Response:
        return self.response

    async def __aexit__(self, *exc: object) -> None:
        await self.response.aclose()


async def load_image(url: str, fetcher: RemoteImageFetcher | None) -> ImagePart:
    """Any accepted ``image_url`` → ``ImagePart``; raises 400/413."""
    if url.startswith("data:"):
        return await decode_data_url(url)
    if url.startswith(("http://", "https://")):
        if fetcher is None:
            raise _bad("remote image URLs are disabled on this server; send a data: URL")
        return await fetcher.fetch(url)
    raise _bad("image URLs must be data: or http(s) URLs")
