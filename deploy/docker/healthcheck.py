"""Container health probe: exit 0 when a URL answers 2xx within 5 s, else 1.

    python /app/deploy/docker/healthcheck.py [URL]   # default: the API's /health on :8000

The image's HEALTHCHECK (the default command is the API) and the compose health checks of
the other roles call it: python:slim has neither curl nor wget. Standard library only.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/health"


def main(argv: list[str]) -> int:
    url = argv[0] if argv else DEFAULT_URL
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - local probe
            return 0 if 200 <= resp.status < 300 else 1
    except (OSError, urllib.error.URLError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
