"""Ports for the servers the tests start, chosen so that nothing else takes them first.

A port from `bind(("127.0.0.1", 0))` is one of the kernel's ephemeral ports: between the test
closing that socket and its server binding the port, any outgoing connection of any process on
the machine may be given it as its source port, and the server fails with "address already in
use" (seen in CI, where four pytest workers open thousands of loopback connections). Ports
below `ip_local_port_range` are never handed out that way. Each pytest-xdist worker draws from
a band of its own, so two workers never pick the same port; within a process a port is not
handed out twice; and a port is checked free by binding it before it is returned.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

_LOCK = threading.Lock()
_GIVEN: set[int] = set()
_RNG = random.Random(os.getpid())
BANDS = 16  # xdist workers gw0..gw15 each get one; more share by their number modulo this


def _band() -> range:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low = int(text.split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    start = 10_000
    if low - start < BANDS * 200:  # an unusual range: fall back to the kernel's choice
        return range(0)
    width = (low - start) // BANDS
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    n = int(worker) % BANDS if worker.isdigit() else 0
    return range(start + n * width, start + (n + 1) * width)


def free_port() -> int:
    """A free port on 127.0.0.1 outside the ephemeral range (see the module docstring)."""
    band = _band()
    with _LOCK:
        for _ in range(200 if band else 0):
            port = _RNG.choice(band)
            if port in _GIVEN:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _GIVEN.add(port)
            return port
    with socket.socket() as s:  # no band, or all tried ports busy: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
