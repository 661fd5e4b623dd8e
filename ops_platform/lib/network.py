"""Whether a host is this machine: what may go without TLS."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for a Unix socket (a path, or no host at all), ``localhost`` or a loopback address."""
    host = host.strip().strip("[]")
    if not host or host.startswith(("/", "@")):
        return True
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
