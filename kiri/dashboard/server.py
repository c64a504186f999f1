"""kiri dashboard [--port N] [--listen ADDR]: serve the dashboard, and print its login link.

It listens on 127.0.0.1 only, unless --listen names another address (said loudly on stderr:
anyone who can reach that address and has the link, or the cookie it sets, can judge alerts).
"""

from __future__ import annotations

import argparse
import socket
import sys

from kiri.wire.errors import KiriError

PORT = 8765
LOCAL = "127.0.0.1"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("dashboard", help="a local web page: live charts, why, alerts, feedback")
    d.add_argument(
        "--port", type=int, default=PORT, help=f"the port to serve on (default {PORT}; 0: any)"
    )
    d.add_argument(
        "--listen",
        default=LOCAL,
        metavar="ADDR",
        help=f"the address to listen on (default {LOCAL}, this machine only)",
    )


def cmd_dashboard(args: argparse.Namespace) -> None:
    import uvicorn  # here: the rest of `kiri` starts without the web server

    from kiri.dashboard.app import create_app
    from kiri.dashboard.security import Guard, install_token

    sock = _listen(args.listen, args.port)
    port = sock.getsockname()[1]
    local = args.listen == LOCAL
    hosts = {f"{LOCAL}:{port}", f"localhost:{port}"} if local else None
    guard = Guard(install_token(), hosts)
    app = create_app(guard)
    if not local:
        print(
            f"warning: the dashboard listens on {args.listen}, not only this machine: anyone "
            "who reaches it with the link below can judge alerts and delete rules",
            file=sys.stderr,
        )
    shown = LOCAL if args.listen in (LOCAL, "0.0.0.0", "::") else args.listen
    print(f"kiri dashboard: http://{shown}:{port}/?login={guard.code}", flush=True)
    print("(the link logs one browser in, once; Ctrl-C stops the dashboard)", flush=True)
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=1, access_log=False, lifespan="off"
    )
    uvicorn.Server(config).run(sockets=[sock])


def _listen(addr: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((addr, port))
    except OSError as e:
        sock.close()
        raise KiriError(f"cannot listen on {addr}:{port}: {e.strerror}") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock
