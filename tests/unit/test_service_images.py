"""Image URLs: data: decoding and checks; remote fetch SSRF rules against a 127.0.0.1 server.

DNS is monkeypatched through the fetcher's ``resolver``; the only real connections go to a local
test server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from service.errors import InvalidRequest, PayloadTooLarge
from service.images import (
    RemoteImageFetcher,
    decode_data_url,
    is_public_address,
    load_image,
)
from service.settings import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from tests.fakes import png_bytes, png_data_url

PNG = png_bytes()


class _Handler(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        _Handler.hosts.append(self.headers.get("Host", ""))
        if self.path == "/ok.png":
            self._send(200, PNG, length=True)
        elif self.path == "/big":
            self._send(200, b"x" * 5000, length=True)
        elif self.path == "/big-chunked":
            self._send(200, b"x" * 5000, length=False)
        elif self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(1.0)
            self._send(200, PNG, length=True)
        else:
            self._send(404, b"nope", length=True)

    def _send(self, status: int, body: bytes, length: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "image/png")
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.close_connection = True
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up (time cap): expected


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


DNS = {"img.test": ["127.0.0.1"], "internal.test": ["10.0.0.5"], "meta.test": ["169.254.169.254"],
       "mixed.test": ["8.8.8.8", "10.1.2.3"], "loop.test": ["127.0.0.1"]}


async def fake_dns(host: str, port: int) -> list[str]:
    if host in DNS:
        return DNS[host]
    if host[0].isdigit() or ":" in host:  # IP literals resolve to themselves
        return [host]
    raise OSError("no such host")


def _fetcher(**kw) -> RemoteImageFetcher:
    """Treat 127.0.0.1 as public (it is the test server); everything else uses the real rule."""
    kw.setdefault("resolver", fake_dns)
    kw.setdefault("address_ok", lambda a: a == "127.0.0.1" or is_public_address(a))
    kw.setdefault("max_bytes", 1000)
    kw.setdefault("timeout_s", 2.0)
    return RemoteImageFetcher(**kw)


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "172.16.3.4", "192.168.1.1", "127.0.0.1", "::1", "169.254.169.254", "fe80::1",
     "fd00:ec2::254", "100.100.100.200", "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1",
     "::ffff:10.0.0.1", "224.0.0.1", "fc00::1", "not-an-ip"],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(address)


async def test_fetch_ok_connects_to_checked_address_with_host_header(server: int) -> None:
    part = await _fetcher().fetch(f"http://img.test:{server}/ok.png")
    assert part.mime_type == "image/png" and part.data == PNG
    assert _Handler.hosts[-1] == f"img.test:{server}"


@pytest.mark.parametrize("host", ["internal.test", "meta.test", "mixed.test"])
async def test_names_resolving_to_private_or_metadata_are_refused(server: int, host: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        await _fetcher().fetch(f"http://{host}:{server}/ok.png")
    assert e.value.code == "image_host_refused" and e.value.status == 400


async def test_loopback_refused_with_the_real_policy(server: int) -> None:
    strict = RemoteImageFetcher(max_bytes=1000)  # real resolver and address rule
    for url in (f"http://127.0.0.1:{server}/ok.png", f"http://[::1]:{server}/ok.png"):
        with pytest.raises(InvalidRequest) as e:
            await strict.fetch(url)
        assert e.value.code == "image_host_refused"
    with pytest.raises(InvalidRequest):
        await RemoteImageFetcher(resolver=fake_dns).fetch(f"http://loop.test:{server}/ok.png")


@pytest.mark.parametrize(
    "target",
    ["http://internal.test/x.png", "http://meta.test/latest/meta-data", "http://127.0.0.2:1/",
     "http://[fe80::1]/x"],
)
async def test_redirects_into_private_addresses_are_refused(server: int, target: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        await _fetcher().fetch(f"http://img.test:{server}/redirect?to={target}")
    assert e.value.code == "image_host_refused"
    assert _Handler.hosts[-1] == f"img.test:{server}"  # only the first hop reached a server


async def test_redirect_to_allowed_host_is_followed(server: int) -> None:
    url = f"http://img.test:{server}/redirect?to=/ok.png"
    assert (await _fetcher().fetch(url)).data == PNG


async def test_byte_cap_declared_and_streamed(server: int) -> None:
    for path in ("/big", "/big-chunked"):
        with pytest.raises(PayloadTooLarge) as e:
            await _fetcher(max_bytes=1000).fetch(f"http://img.test:{server}{path}")
        assert e.value.status == 413


async def test_time_cap(server: int) -> None:
    with pytest.raises(InvalidRequest) as e:
        await _fetcher(timeout_s=0.2).fetch(f"http://img.test:{server}/slow")
    assert e.value.code == "image_fetch_timeout"


async def test_allow_list_and_url_shape(server: int) -> None:
    with pytest.raises(InvalidRequest) as e:
        await _fetcher(allowed_hosts=(".example.com",)).fetch(f"http://img.test:{server}/ok.png")
    assert e.value.code == "image_host_refused"
    ok = await _fetcher(allowed_hosts=("img.test",)).fetch(f"http://img.test:{server}/ok.png")
    assert ok.data == PNG
    for bad in (f"http://user:pw@img.test:{server}/ok.png", "http:///nohost"):
        with pytest.raises(InvalidRequest):
            await _fetcher().fetch(bad)
    with pytest.raises(InvalidRequest):
        await _fetcher().fetch(f"http://img.test:{server}/missing")  # 404 upstream


async def test_remote_urls_refused_when_disabled() -> None:
    with pytest.raises(InvalidRequest) as e:
        await load_image("https://example.com/cat.png", None)
    assert "disabled" in e.value.message
    with pytest.raises(InvalidRequest):
        await load_image("ftp://example.com/cat.png", None)


async def test_data_url_ok_and_errors() -> None:
    part = await decode_data_url(png_data_url())
    assert part.mime_type == "image/png" and part.data == PNG
    b64 = base64.b64encode(PNG).decode()
    for bad in (
        "data:image/png," + b64,  # not base64-flagged
        "data:text/plain;base64," + b64,  # not an image type
        "data:image/png;base64,@@@not-base64@@@",
        "data:image/png;base64," + base64.b64encode(b"GIF89a but not really").decode(),
        "data:image/png;base64",  # no comma
    ):
        with pytest.raises(InvalidRequest):
            await decode_data_url(bad)


async def test_data_url_declared_type_is_checked_against_content() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="JPEG")
    part = await decode_data_url("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    assert part.mime_type == "image/jpeg"  # the real format wins


async def test_too_many_pixels_and_bytes_are_413() -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")
    with pytest.raises(PayloadTooLarge):
        await decode_data_url("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    with pytest.raises(PayloadTooLarge):
        await decode_data_url("data:image/png;base64," + "A" * (MAX_IMAGE_BYTES * 4 // 3 + 8))


async def test_truncated_image_is_rejected_up_front() -> None:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, format="JPEG")
    truncated = buf.getvalue()[: len(buf.getvalue()) // 2]
    with pytest.raises(InvalidRequest):
        await decode_data_url("data:image/jpeg;base64," + base64.b64encode(truncated).decode())
