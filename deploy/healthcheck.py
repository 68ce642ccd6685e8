"""The image's HEALTHCHECK: GET /health of the ``spaguard serve`` running in this container.

    python /opt/spaguard/healthcheck.py      # exit 0 when /health answers 200, 1 otherwise

A fixed URL would be wrong as soon as someone runs ``serve --port 9000`` or passes ``--config``: this
reads the serve process's own arguments from ``/proc/<pid>/cmdline`` (PID 1 under the exec-form
ENTRYPOINT, or any process when the container runs an init) and parses them with the server's own
``load_settings``, so flags, the YAML file and the defaults resolve exactly as the server resolved
them. A wildcard bind (0.0.0.0, ::) is probed on loopback. Prints why when unhealthy (docker
inspect shows it).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path


def serve_args(proc: Path = Path("/proc")) -> list[str]:
    """The arguments after ``serve`` of the first ``spaguard serve`` process found (PID 1 first)."""
    pids = sorted((p for p in proc.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for pid in pids:
        try:
            argv = (pid / "cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
        except OSError:
            continue  # exited while we looked, or not ours to read
        for i, arg in enumerate(argv[:-1]):
            if Path(arg).name == "spaguard" and argv[i + 1] == "serve":
                return argv[i + 2:]
    raise LookupError("no `spaguard serve` process in this container")


def health_url(args: list[str]) -> str:
    from service.settings import load_settings  # the server's own parsing (defaults, --config, flags)

    settings = load_settings(args)
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/health"


def main() -> int:
    try:
        url = health_url(serve_args())
        with urllib.request.urlopen(url, timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 503: engine or classifier down (the body says which)
        print(f"unhealthy: {exc.code} {exc.read()[:200]!r}")
    except (LookupError, OSError, SystemExit) as exc:
        print(f"unhealthy: {exc!r}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
