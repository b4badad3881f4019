"""Opens a Taipan serial line named by a target string (a device, unix:PATH, tcp:HOST:PORT or
rfc2217://HOST:PORT) as a byte stream on a file descriptor."""
from __future__ import annotations

import errno
import os
import select
import socket
import stat
import threading
from pathlib import Path
from typing import Self

TARGET_FORMS = ("a serial device (/dev/ttyUSB0), unix:PATH (QEMU's socket), tcp:HOST:PORT (a raw TCP port) "
                "or rfc2217://HOST:PORT (a console server's RFC 2217 port)")
TARGET_HELP = "/dev/ttyUSB0, unix:PATH, tcp:HOST:PORT or rfc2217://HOST:PORT"
DEFAULT_BAUD = 115200
CONNECT_TIMEOUT = 5.0


class LineError(Exception):
    """The line could not be opened or broke; the message is one line naming the target."""


class Line:
    """One open serial line: a file descriptor both tools read and write, whatever carries it."""

    def __init__(self, target: str, fd: int, closer: object) -> None:
        self.target = target
        self._fd = fd
        self._closer = closer  # the socket or serial.Serial object that owns fd

    def fileno(self) -> int:
        return self._fd

    def read(self, timeout: float) -> bytes:
        """What arrives within `timeout` seconds (b"" if nothing); LineError when the far end closes."""
        ready, _, _ = select.select([self._fd], [], [], max(timeout, 0))
        if not ready:
            return b""
        try:
            data = os.read(self._fd, 4096)
        except OSError as e:
            raise LineError(f"{self.target}: read failed: {e.strerror}") from None
        if not data:
            raise LineError(f"{self.target}: the other end closed the connection")
        return data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as e:
            raise LineError(f"{self.target}: write failed: {e.strerror}") from None

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()
            self._closer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Rfc2217Line(Line):
    """An RFC 2217 port through pyserial, whose client decodes telnet in a thread of its own and has no
    descriptor to wait on: a pump thread copies what it decodes into a pipe, the line's descriptor."""

    def __init__(self, target: str, port: object) -> None:
        self._pipe_r, self._pipe_w = os.pipe()
        super().__init__(target, self._pipe_r, port)
        self._port = port
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        import serial

        try:
            while self._port.is_open:
                data = self._port.read(self._port.in_waiting or 1)
                if data:
                    os.write(self._pipe_w, data)
        except (serial.SerialException, OSError):
            pass  # the server closed the connection, or close() did: the pipe's end says so
        finally:
            os.close(self._pipe_w)

    def write(self, data: bytes) -> None:
        import serial

        try:
            self._port.write(data)
        except serial.SerialException as e:
            raise LineError(f"{self.target}: write failed: {e}") from None

    def close(self) -> None:
        if self._closer is not None:
            super().close()
            os.close(self._pipe_r)  # a pump blocked on a full pipe gets EPIPE and ends
            self._pump_thread.join()


def open_line(target: str, *, baud: int = DEFAULT_BAUD) -> Line:
    """Open `target`: a serial device at `baud`, `unix:PATH`, `tcp:HOST:PORT` or `rfc2217://HOST:PORT`
    (whose server sets its port to `baud`)."""
    if target.startswith("rfc2217://"):
        return _open_rfc2217(target, baud)
    if target.startswith("unix:"):
        return _open_unix(target, target[len("unix:"):])
    if target.startswith("tcp:"):
        host, sep, port = target[len("tcp:"):].rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise LineError(f"{target}: expected tcp:HOST:PORT with a port from 1 to 65535")
        return _open_tcp(target, host.strip("[]"), int(port))
    if ":" in target.split("/", 1)[0]:
        raise LineError(f"{target}: unknown kind of target; expected {TARGET_FORMS}")
    return _open_device(target, baud)


def _open_unix(target: str, path: str) -> Line:
    if not path:
        raise LineError(f"{target}: expected unix:PATH")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise LineError(f"{target}: no such socket (is QEMU running? 'taipan run --serial {target}' "
                        "starts one there)") from None
    if not stat.S_ISSOCK(mode):
        raise LineError(f"{target}: {path} is not a socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except ConnectionRefusedError:
        sock.close()
        raise LineError(f"{target}: connection refused (nobody listens there: QEMU has exited)") from None
    except OSError as e:
        sock.close()
        raise LineError(f"{target}: {e.strerror}") from None
    return Line(target, sock.fileno(), sock)


def _open_tcp(target: str, host: str, port: int) -> Line:
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except ConnectionRefusedError:
        raise LineError(f"{target}: connection refused (nothing listens on port {port} of {host})") from None
    except TimeoutError:
        raise LineError(f"{target}: no answer within {CONNECT_TIMEOUT:g} s") from None
    except socket.gaierror as e:
        raise LineError(f"{target}: unknown host {host!r} ({e.strerror})") from None
    except OSError as e:
        raise LineError(f"{target}: {e.strerror}") from None
    sock.settimeout(None)  # the Line waits with select; the fd itself blocks
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # keystrokes go out one by one
    return Line(target, sock.fileno(), sock)


def _open_device(target: str, baud: int) -> Line:
    import serial

    path = Path(target)
    if not path.exists():
        raise LineError(f"{target}: no such serial device")
    if not os.access(path, os.R_OK | os.W_OK):
        raise LineError(f"{target}: permission denied (serial devices are usually group dialout)")
    try:
        # 8N1, no flow control: what Taipan's UART driver programs.
        port = serial.Serial(str(path), baudrate=baud, timeout=0, exclusive=True)
    except (serial.SerialException, ValueError) as e:
        err = getattr(e, "errno", None)
        why = os.strerror(err) if err else str(e)
        if err == errno.EBUSY or (err in (errno.EAGAIN, errno.EWOULDBLOCK)):
            why = "in use by another program"
        raise LineError(f"{target}: cannot open at {baud} baud: {why}") from None
    return Line(target, port.fileno(), port)


def _open_rfc2217(target: str, baud: int) -> Line:
    import serial

    host, sep, port = target[len("rfc2217://"):].partition("?")[0].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LineError(f"{target}: expected rfc2217://HOST:PORT with a port from 1 to 65535")
    # pyserial raises DTR and RTS on opening and by default waits for the server to confirm
    # each. Taipan's line uses no modem control, and a server in front of a port without
    # those lines (a pty, a 3-wire cable) may never confirm: don't wait.
    url = target if "ign_set_control" in target else target + ("&" if "?" in target else "?") + "ign_set_control"
    try:
        # 8N1 at `baud`, no flow control, as for a device: the server programs its port so.
        line = serial.serial_for_url(url, baudrate=baud, timeout=0.2)
    except serial.SerialException as e:
        cause = e.__context__
        if isinstance(cause, ConnectionRefusedError):
            why = f"connection refused (nothing listens on port {port} of {host})"
        elif isinstance(cause, TimeoutError):
            why = f"no answer within {CONNECT_TIMEOUT:g} s"
        elif isinstance(cause, socket.gaierror):
            why = f"unknown host {host!r} ({cause.strerror})"
        elif "RFC2217" in str(e):
            why = "the server does not speak RFC 2217 (for a raw TCP port, use tcp:HOST:PORT)"
        else:
            why = str(e)
        raise LineError(f"{target}: {why}") from None
    return _Rfc2217Line(target, line)
