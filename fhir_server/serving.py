"""Running several worker processes on one port, with connections spread evenly between them.

uvicorn's own ``--workers`` shares one listening socket: whichever process wakes first accepts every connection
waiting (asyncio accepts up to 100 per wake-up), so a client that opens its keep-alive connections at once (an
EHR's connection pool, a load balancer) lands them all on one process, and the other workers idle (measured: 16
connections, one worker did all the work, the second core idled while submissions queued).  On Linux each worker
here listens on its own socket bound with ``SO_REUSEPORT``, and the kernel spreads new connections across them.
Elsewhere (no load-balancing ``SO_REUSEPORT``) uvicorn's shared socket is used.

The supervisor restarts a worker that dies (as uvicorn's does) and stops them all on SIGINT or SIGTERM; a worker
whose supervisor dies is stopped by the kernel (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

import uvicorn

log = logging.getLogger("fhir_server.serving")

APP = "fhir_server.asgi:app"
RESTART_PAUSE_SECONDS = 1.0  # between restarts of a crashing worker, so a broken start does not spin
PR_SET_PDEATHSIG = 1  # prctl(2)


def spreads_connections() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def serve(host: str, port: int, workers: int, **options: Any) -> None:
    """Serve the app with ``workers`` processes; ``options`` are uvicorn's (log_level, access_log, ...)."""
    # uvicorn's proxy handling stays off whatever the caller asks: by default it believes X-Forwarded-For from
    # 127.0.0.1 and overwrites the client address before the app can judge it.  The app decides, from
    # FHIR_SERVER_TRUSTED_PROXIES only (middleware.TrustedProxyHeaders, installed in asgi.py).
    options = {**options, "proxy_headers": False}
    if workers <= 1 or not spreads_connections():
        uvicorn.run(APP, host=host, port=port, workers=workers, **options)
        return
    _check_port_free(host, port)
    Supervisor(host, port, workers, options).run()


def _check_port_free(host: str, port: int) -> None:
    """Bound without SO_REUSEPORT, so another server on the port (ours included) makes this fail: a second
    instance must not silently share the port with the first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"fhir-server: cannot listen on {host}:{port}: {exc.strerror}") from None


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _die_with(supervisor: int) -> None:
    """A worker must not outlive its supervisor (killed, say, by SIGKILL or the OOM killer): it would go on
    serving the port, unsupervised.  Linux sends it SIGTERM when the supervisor dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request took effect
        os._exit(0)


def _worker(host: str, port: int, options: dict[str, Any], supervisor: int) -> None:
    """One worker process: its own socket in the port's group, one uvicorn server."""
    from fhir_server import logs
    from fhir_server.config import Settings

    _die_with(supervisor)
    logs.configure(Settings().log_level)  # a spawned process starts with none of the parent's logging
    sock = _listening_socket(host, port)
    uvicorn.Server(uvicorn.Config(APP, host=host, port=port, **options)).run(sockets=[sock])


class Supervisor:
    def __init__(self, host: str, port: int, workers: int, options: dict[str, Any]) -> None:
        self.args = (host, port, options)
        self.count = workers
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[Any] = []
        self.stopping = False

    def _start(self) -> Any:
        process = self.context.Process(target=_worker, args=(*self.args, os.getpid()), name="fhir-server-worker")
        process.start()
        return process

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        self.processes = [self._start() for _ in range(self.count)]
        try:
            while not self.stopping:
                time.sleep(0.2)
                for number, process in enumerate(self.processes):
                    if not process.is_alive() and not self.stopping:
                        log.error("worker %s exited with %s; starting another", process.pid, process.exitcode)
                        time.sleep(RESTART_PAUSE_SECONDS)
                        self.processes[number] = self._start()
        finally:
            for process in self.processes:
                if process.is_alive():
                    process.terminate()  # SIGTERM: uvicorn finishes the requests in flight, then exits
            for process in self.processes:
                process.join(timeout=30)
                if process.is_alive():
                    process.kill()
