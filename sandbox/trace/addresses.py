"""Where a network call goes: inside the build's own network namespace, or out of it."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for an address that stays in the build's namespace (its only interface is lo).

    Loopback (127.0.0.0/8, ::1, and their IPv4-mapped forms) and the unspecified
    address (which the kernel takes as this host). Anything else, including what is
    not an IP address at all, is an attempt to reach outside.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified
