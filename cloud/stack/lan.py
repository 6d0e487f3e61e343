"""This host's LAN address: what a Raspberry Pi dials, what compose advertises, what TLS certificates name."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess


def lan_address() -> str | None:
    """This host's LAN IPv4 address (what a Raspberry Pi dials), or None when unknown."""
    if shutil.which("ip"):
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                             capture_output=True, text=True).stdout
        found = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
        if found:
            return found[0]
    if shutil.which("ipconfig"):  # macOS
        for iface in ("en0", "en1"):
            out = subprocess.run(["ipconfig", "getifaddr", iface], capture_output=True,
                                 text=True).stdout.strip()
            if out:
                return out
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return None
    return None if address.startswith("127.") else address
