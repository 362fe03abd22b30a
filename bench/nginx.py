"""Debian's nginx as a plain WebSocket + HTTP reverse proxy, the reference for relay overhead.

Writes a minimal nginx.conf (one worker, like one gateway process; upgrade headers passed
through; no buffering of request bodies, so a POST streams as it does through the gateway)
and runs `nginx -p <dir> -c <conf> -g 'daemon off;'` in the foreground until stopped.
Install with `apt-get install -y nginx-light` (or `nginx`).

    python bench/nginx.py 8080   # proxy a free port to 127.0.0.1:8080 until Ctrl-C
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from _loopback import LoopbackPort  # bench/ is sys.path[0] when a bench script runs

INSTALL_HINT = "apt-get install -y nginx-light"

CONF = """\
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 16m;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    return found


class Nginx(LoopbackPort):
    """nginx proxying a free loopback port to `upstream_port`; a context manager."""

    def __init__(self, upstream_port: int, work: Path) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError(f"nginx is not installed ({INSTALL_HINT})")
        super().__init__()
        self._binary = binary
        self._upstream = upstream_port
        self._work = work
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The worker's pid: the process that relays (the master only supervises)."""
        children = Path(f"/proc/{self._master_pid}/task/{self._master_pid}/children")
        pids = children.read_text().split()
        return int(pids[0]) if pids else self._master_pid

    @property
    def _master_pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> Nginx:
        self._work.mkdir(parents=True, exist_ok=True)
        conf = self._work / "nginx.conf"
        conf.write_text(CONF.format(work=self._work, upstream=self._upstream, port=self.port))
        command = [self._binary, "-p", str(self._work), "-c", str(conf), "-g", "daemon off;"]
        self._proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self._proc.returncode}; see {self._work}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise TimeoutError("nginx did not start listening")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None:
            return
        self._proc.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    import tempfile

    with Nginx(int(sys.argv[1]), Path(tempfile.mkdtemp(prefix="nginx-"))) as proxy:
        print(f"nginx on {proxy.http_url} -> 127.0.0.1:{sys.argv[1]}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
