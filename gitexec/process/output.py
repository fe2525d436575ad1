"""A command's pipes: a thread feeds its stdin and reads its output without ever blocking;
the log gets that output redacted line by line and capped to its head and tail."""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from gitexec.process.values import _MiB

_READ_SIZE = 65536
_MAX_LINE = 1024 * 1024  # a line longer than this is redacted in pieces
_OVERLAP = 8192  # a secret on such a line is kept whole if it is shorter than this


class _Redactor:
    """Applies `redact` to whole lines only, so a secret split across reads is still found.

    A line longer than _MAX_LINE is redacted in pieces, cut where cutting changes nothing
    (a secret shorter than _OVERLAP is never split).
    """

    def __init__(self, redact: Callable[[bytes], bytes]) -> None:
        self.redact = redact
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        buf = self.pending + data
        out = []
        newline = buf.rfind(b"\n")
        if newline >= 0:
            out.append(self.redact(buf[: newline + 1]))
            buf = buf[newline + 1 :]
        while len(buf) > _MAX_LINE:
            cut = self._cut(buf)
            out.append(self.redact(buf[:cut]))
            buf = buf[cut:]
        self.pending = buf
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self.pending = self.pending, b""
        return self.redact(rest) if rest else b""

    def _cut(self, buf: bytes) -> int:
        """Where to cut a long line: a place that no secret spans."""
        space = max(buf.rfind(c, _MAX_LINE - _OVERLAP, _MAX_LINE) for c in (b" ", b"\t", b"\r"))
        candidates = [space + 1] if space > 0 else []
        candidates += [_MAX_LINE - k * _OVERLAP for k in range(_MAX_LINE // _OVERLAP - 1)]
        for cut in candidates:
            left, right = buf[max(0, cut - _OVERLAP) : cut], buf[cut : cut + _OVERLAP]
            if self.redact(left) + self.redact(right) == self.redact(left + right):
                return cut
        return _MAX_LINE


class _CappedLog:
    """Appends a command's output to its log, keeping at most `cap` bytes: the first and the
    last half, and a line saying how much was dropped between them."""

    def __init__(self, f: BinaryIO, cap: int | None) -> None:
        self.f = f
        self.cap = cap
        self.start = f.seek(0, os.SEEK_END)
        self.written = 0
        self.head = (cap or 0) - (cap or 0) // 2
        self.tail_max = (cap or 0) // 2
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_len = 0
        self.dropped = 0
        self.capped = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.cap is None or (not self.capped and self.written + len(data) <= self.cap):
            self.f.write(data)
            self.written += len(data)
            return
        if not self.capped:
            # Past the cap: the file keeps the head (filled from this chunk if it is short);
            # what followed the head becomes the tail.
            self.capped = True
            fill = max(0, self.head - self.written)
            self.f.write(data[:fill])
            self.written += fill
            data = data[fill:]
            self.f.seek(self.start + self.head)
            moved = self.f.read()
            self.f.truncate(self.start + self.head)
            self.f.seek(0, os.SEEK_END)
            self._keep(moved)
        self._keep(data)

    def _keep(self, data: bytes) -> None:
        self.tail.append(data)
        self.tail_len += len(data)
        while self.tail_len > self.tail_max:
            excess = self.tail_len - self.tail_max
            first = self.tail[0]
            if len(first) <= excess:
                self.tail.popleft()
                cut = len(first)
            else:
                self.tail[0] = first[excess:]
                cut = excess
            self.tail_len -= cut
            self.dropped += cut

    def close(self) -> int:
        """Write the tail after the marker; the number of bytes dropped."""
        if self.capped:
            tail = b"".join(self.tail)
            newline = tail.find(b"\n", 0, 4096)  # start the tail on a line of its own
            if newline >= 0:
                tail = tail[newline + 1 :]
                self.dropped += newline + 1
            self.f.write(
                f"\n[gitexec: {self.dropped} bytes of output dropped here; the log keeps the "
                f"first {_size(self.head)} and the last {_size(self.tail_max)} of each "
                f"command's output]\n".encode()
            )
            self.f.write(tail)
        return self.dropped


def _size(n: int) -> str:
    if n >= _MiB:
        return f"{n / _MiB:g} MiB"
    return f"{n / 1024:g} KiB" if n >= 1024 else f"{n} bytes"


class _Pump(threading.Thread):
    """Feeds the command's stdin and reads its output: to `on_output` as it comes, and to the
    log redacted and capped. Never blocks on a child that stops reading or writing."""

    def __init__(
        self,
        out_fd: int,
        in_fd: int | None,
        stdin: bytes,
        log: _CappedLog,
        redact: Callable[[bytes], bytes] | None,
        on_output: Callable[[bytes], None] | None,
    ) -> None:
        super().__init__(name="gitexec-output", daemon=True)
        self.out_fd = out_fd
        self.in_fd = in_fd
        self.stdin = memoryview(stdin)
        self.log = log
        self.redactor = _Redactor(redact) if redact is not None else None
        self.on_output = on_output
        self.warnings: list[str] = []
        self.abandoned = False
        self._log_failed = False
        self._stop_at: float | None = None
        self._lock = threading.Lock()

    def finish(self, drain_s: float) -> None:
        """The command is gone: stop feeding stdin, read what is left for up to `drain_s`."""
        with self._lock:
            self._stop_at = time.monotonic() + drain_s
        self.join()

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(self.out_fd, selectors.EVENT_READ)
            if self.in_fd is not None:
                if self.stdin:
                    os.set_blocking(self.in_fd, False)
                    sel.register(self.in_fd, selectors.EVENT_WRITE)
                else:
                    self._close_stdin(sel)
            while sel.get_map():
                with self._lock:
                    stop_at = self._stop_at
                if stop_at is not None:
                    if self.in_fd is not None:
                        self._close_stdin(sel)
                    if time.monotonic() >= stop_at:
                        self.abandoned = True
                        break
                for key, _ in sel.select(timeout=0.1):
                    if key.fd == self.out_fd:
                        self._read(sel)
                    else:
                        self._write(sel)
        finally:
            if self.in_fd is not None:
                self._close_stdin(sel)
            sel.close()
            os.close(self.out_fd)
            self._log(self.redactor.flush() if self.redactor else b"")

    def _read(self, sel: selectors.BaseSelector) -> None:
        try:
            data = os.read(self.out_fd, _READ_SIZE)
        except OSError:
            data = b""
        if not data:
            sel.unregister(self.out_fd)
            return
        if self.on_output is not None:
            try:
                self.on_output(data)
            except Exception as exc:
                self.on_output = None
                self.warnings.append(f"output callback failed: {exc!r}")
        self._log(self.redactor.feed(data) if self.redactor else data)

    def _log(self, data: bytes) -> None:
        if self._log_failed:
            return
        try:
            self.log.write(data)
        except OSError as exc:  # a full disk must not stall the command: keep reading
            self._log_failed = True
            self.warnings.append(f"cannot write the log: {exc.strerror}")

    def _write(self, sel: selectors.BaseSelector) -> None:
        assert self.in_fd is not None
        try:
            sent = os.write(self.in_fd, self.stdin[:_READ_SIZE])
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the command does not want (more of) its input
            sent = len(self.stdin)
        self.stdin = self.stdin[sent:]
        if not self.stdin:
            self._close_stdin(sel)

    def _close_stdin(self, sel: selectors.BaseSelector) -> None:
        if self.in_fd is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(self.in_fd)
        with contextlib.suppress(OSError):
            os.close(self.in_fd)
        self.in_fd = None


class _SafeRedact:
    """`redact`, except that a failing redactor withholds the output instead of leaking it."""

    def __init__(self, redact: Callable[[bytes], bytes]) -> None:
        self.redact = redact
        self.error: str | None = None

    def __call__(self, data: bytes) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self.redact(data)
        except Exception as exc:
            self.error = repr(exc)
            return (
                f"\n[gitexec: output withheld from here on: redaction failed: {exc!r}]\n".encode()
            )
