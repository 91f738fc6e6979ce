"""Whether `encoderfit serve` can listen where it was asked to: checked before the model loads and again just before
"serving on ..." is said, so a busy port is one line naming it, not a promise followed by exit code 3."""

from __future__ import annotations

import errno
import socket

from ..core.errors import UserError


def check_port(host: str, port: int) -> None:
    """Bind `host`:`port` as uvicorn will (SO_REUSEADDR, so a port left in TIME_WAIT is fine) and let it go at once."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise UserError(f"--host: cannot resolve '{host}' ({err.strerror}); give an address of this machine, e.g. "
                        "127.0.0.1 or 0.0.0.0") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(f"--port: port {port} on {host} is already in use (another server is listening there); "
                                "stop it or choose another --port") from None
            if err.errno == errno.EACCES:
                raise UserError(f"--port: port {port} on {host}: permission denied (ports under 1024 need root); choose "
                                "another --port, e.g. 8000") from None
            if err.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"--host: {host} is not an address of this machine; use 127.0.0.1, 0.0.0.0 or one of its "
                                "own addresses") from None
            raise UserError(f"--port: cannot listen on {host}:{port} ({err.strerror}); choose another --port or --host") from None
