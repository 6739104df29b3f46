"""Talk to a board over SSH with the system OpenSSH client (``ssh``).

Why the OpenSSH client and not a Python library: it is on every machine that has SSH, it
reads the user's ``~/.ssh/config`` (aliases, ``ProxyJump``, ports), keys and agent, and it
checks host keys against ``known_hosts`` exactly as the user's own ``ssh`` does. Files go
through the same connection (``tar`` streamed over stdin, ``cat`` back), so no ``scp`` or
``sftp`` subsystem is needed on the board. ``BatchMode`` is on: nothing ever prompts.

Every failure of ``ssh`` itself becomes one ``LiteconvError`` line naming the cause and
the fix: host unreachable, authentication refused, host key unknown or changed.

Example:
    >>> board = SSH(parse_address("ssh://pi@raspberrypi.local"), identity="~/.ssh/id_ed25519")
    >>> board.run("uname -m").stdout
    'aarch64\\n'
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from liteconv.device.errors import LiteconvError

SSH_FAILED = 255  # ssh's own exit status for connection and authentication errors


@dataclass(frozen=True)
class Address:
    """Where the board is: ``ssh://[USER@]HOST[:PORT]`` (user and port may come from
    ``~/.ssh/config`` when left out)."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return f"{self.destination}{f':{self.port}' if self.port else ''}"

    @property
    def label(self) -> str:
        """A file-name-safe name for the board (the host)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.host).strip("._") or "board"


def parse_address(text: str) -> Address:
    """``ssh://USER@HOST:PORT`` (or ``USER@HOST``) as an :class:`Address`; one-line errors."""
    raw = text if "://" in text else f"ssh://{text}"
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as err:
        raise LiteconvError(
            f"{text!r}: not an address ({err}); use ssh://USER@HOST[:PORT]"
        ) from None
    if parts.scheme != "ssh":
        raise LiteconvError(
            f"{text!r}: only ssh:// addresses are supported; use ssh://USER@HOST[:PORT]"
        )
    host = parts.hostname
    if not host or parts.path not in ("", "/") or parts.query or parts.password:
        raise LiteconvError(f"{text!r}: expected ssh://USER@HOST[:PORT] and nothing else")
    if host.startswith("-") or (parts.username or "").startswith("-"):
        raise LiteconvError(f"{text!r}: a host or user cannot start with '-'")
    return Address(host=host, user=parts.username or None, port=port)


def _classify(stderr: str, address: Address, known_hosts: str | None) -> LiteconvError:
    """The one-line error for an ``ssh`` failure (exit 255) from what it printed."""
    text = stderr.strip()
    last = (text.splitlines() or ["no output"])[-1].strip()
    where = str(address)
    known = known_hosts or "~/.ssh/known_hosts"
    if "Could not resolve hostname" in text:
        return LiteconvError(f"{where}: cannot resolve the host name; check the address")
    if "IDENTIFICATION HAS CHANGED" in text:
        return LiteconvError(
            f"{where}: the host key does not match the one in {known}; if the board was "
            f"reinstalled remove the old key with 'ssh-keygen -R {_known_name(address)}', "
            "otherwise someone may be intercepting the connection"
        )
    if "Host key verification failed" in text or "host key is known" in text:
        return LiteconvError(
            f"{where}: its host key is not in {known}; connect once with 'ssh' to check and "
            "accept it, or pass --accept-new-host-key"
        )
    offered = re.search(r"Permission denied \(([^)]*)\)", text)
    if offered and "publickey" not in offered.group(1).split(","):
        login = f"{address.user + '@' if address.user else ''}{address.host}"
        port = f" -p {address.port}" if address.port else ""
        return LiteconvError(
            f"{where}: the board takes passwords only ({last}); liteconv logs in with a key and "
            f"never types a password: turn on PubkeyAuthentication in the board's sshd_config, "
            f"then install your key once with 'ssh-copy-id{port} {login}'"
        )
    if "Permission denied" in text or "Too many authentication failures" in text:
        return LiteconvError(
            f"{where}: authentication refused ({last}); liteconv needs key login: install your "
            f"key once with 'ssh-copy-id {address.user + '@' if address.user else ''}"
            f"{address.host}' (it asks the password once), or give --identity KEY, or load the "
            "key in ssh-agent"
        )
    if re.search(r"Connection refused|No route to host|timed out|Network is unreachable|"
                 r"Connection reset|Connection closed by .* port", text):  # fmt: skip
        return LiteconvError(
            f"{where}: host unreachable ({last}); check that the board is on, the address "
            "and port, and that its SSH server runs"
        )
    return LiteconvError(f"{where}: ssh failed ({last})")


def _known_name(address: Address) -> str:
    return f"[{address.host}]:{address.port}" if address.port else address.host


def remote_failure(stderr: str, what: str, fix: str) -> LiteconvError:
    """The one-line error for a command that failed on the board (a full disk said so)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    if any("No space left on device" in ln or "Disk quota exceeded" in ln for ln in lines):
        return LiteconvError(
            f"{what}: the board's disk is full (No space left on device); free some space "
            "there ('df -h' shows where) and run again"
        )
    last = lines[-1] if lines else "no output"
    return LiteconvError(f"{what} failed on the board ({last[-240:]}); {fix}")


class SSH:
    """Run commands on, and move files to and from, one board through ``ssh``."""

    def __init__(
        self,
        address: Address,
        *,
        identity: str | Path | None = None,
        known_hosts: str | Path | None = None,
        accept_new_host_key: bool = False,
        connect_timeout: int = 15,
        ssh: str = "ssh",
    ) -> None:
        exe = shutil.which(ssh)
        if exe is None:
            raise LiteconvError(
                f"{ssh}: the OpenSSH client is not installed; install it "
                "('sudo apt-get install openssh-client')"
            )
        if identity is not None and not Path(identity).expanduser().is_file():
            raise LiteconvError(f"--identity {identity}: no such key file")
        self.address = address
        self.known_hosts = str(Path(known_hosts).expanduser()) if known_hosts else None
        args = [exe, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                "-o", "LogLevel=ERROR",
                "-o", f"StrictHostKeyChecking={'accept-new' if accept_new_host_key else 'yes'}"]  # fmt: skip
        if self.known_hosts:
            args += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if identity is not None:
            args += ["-i", str(Path(identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        if address.port:
            args += ["-p", str(address.port)]
        self._args = [*args, "--", address.destination]

    def run(
        self,
        script: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        what: str = "a command",
        fix: str = "see the message above",
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run ``script`` with ``sh`` on the board; its output as bytes.

        Raises:
            LiteconvError: ssh could not connect or log in (always), or the script failed
                (``check``); one line naming the cause and the fix.
        """
        cmd = [*self._args, "sh -c " + shlex.quote(script)]
        try:
            proc = subprocess.run(cmd, input=stdin if stdin is not None else b"",
                                  capture_output=True, timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise LiteconvError(
                f"{self.address}: {what} did not finish in {timeout:.0f} s; check the board"
            ) from None
        err = proc.stderr.decode("utf-8", "replace")
        if proc.returncode == SSH_FAILED:
            raise _classify(err, self.address, self.known_hosts)
        if check and proc.returncode != 0:
            raise remote_failure(err or proc.stdout.decode("utf-8", "replace"), what, fix)
        return proc

    def text(self, script: str, **kwargs) -> str:
        """``run`` and return stdout as text."""
        return self.run(script, **kwargs).stdout.decode("utf-8", "replace")

    def put_tar(self, archive: Path, folder: str, *, what: str = "copying") -> None:
        """Unpack the local ``.tar.gz`` ``archive`` into ``folder`` on the board."""
        q = shell_path(folder)
        self.run(f"mkdir -p {q} && tar xzf - -C {q}", stdin=Path(archive).read_bytes(),
                 what=what, fix="check that the board has tar and free disk space")  # fmt: skip

    def read(self, path: str, *, what: str = "fetching") -> bytes:
        """The bytes of ``path`` on the board."""
        return self.run(f"cat {shell_path(path)}", what=what,
                        fix="rerun with --keep and look at the board's folder").stdout  # fmt: skip


def shell_path(path: str) -> str:
    """``path`` quoted for ``sh``, with a leading ``~/`` left for the shell to expand."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)
