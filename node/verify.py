"""Ed25519 signature checks in helper processes, fed over pipes by the event loop.

Each check is ``ledger.keys.signature_ok`` (libsodium, strict: PROTOCOL.md 1). The Python
around each check holds the GIL, so threads would contend with the node's event loop;
processes run the checks on other cores.
The node runs ``Verifiers``: a few ``python -m node.verify`` children, each reading jobs
on its stdin and answering on its stdout. Unlike a process pool there is no thread in the
node on either side of the pipe: the event loop writes a job and reads the answer, so a
job costs the node a few microseconds and never stalls the loop waiting for the GIL.

Wire format (little-endian), one job after another:

    job:    u32 job id, u32 byte length of the rest, u32 count,
            count x (32-byte public key, 64-byte signature, u32 length, message)
    answer: u32 job id, u32 count, count bytes (1 = verifies, 0 = does not)

A child exits when its stdin closes (the node stopped or died).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import struct
import sys
from collections.abc import Sequence
from typing import BinaryIO

__all__ = ["Verifiers", "main"]

_HEX = frozenset("0123456789abcdef")
_HEAD = struct.Struct("<II")
_ANSWER = struct.Struct("<II")
_LEN = struct.Struct("<I")


def _hex_bytes(value: str, n: int) -> bytes | None:
    if type(value) is not str or len(value) != 2 * n or not _HEX.issuperset(value):
        return None
    return bytes.fromhex(value)


class Verifiers:
    """``workers`` verifier processes; ``verify`` spreads a list of checks over them."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._procs: list[asyncio.subprocess.Process] = []
        self._readers: list[asyncio.Task[None]] = []
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._load = [0] * workers  # checks outstanding per process
        self._ids = itertools.count(1)
        self._starting: asyncio.Task[None] | None = None
        self._broken: BaseException | None = None  # a process went away: no more jobs

    async def start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._spawn())
        await asyncio.shield(self._starting)

    async def _spawn(self) -> None:
        for k in range(self.workers):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "node.verify",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                start_new_session=True,  # Ctrl-C in the terminal is for the node, not its helpers
            )
            self._procs.append(proc)
            self._readers.append(asyncio.ensure_future(self._read(k, proc)))

    @property
    def busy(self) -> bool:
        """Every process has work waiting (or none has started yet)."""
        return not self._procs or self._broken is not None or all(self._load)

    @property
    def broken(self) -> bool:
        """A process went away: ``verify`` raises from now on."""
        return self._broken is not None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    async def _read(self, k: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        err: BaseException = RuntimeError(f"signature verifier process {proc.pid} exited")
        try:
            while True:
                job, count = _ANSWER.unpack(await proc.stdout.readexactly(_ANSWER.size))
                flags = await proc.stdout.readexactly(count)
                fut = self._waiting.pop(job, None)
                self._load[k] -= count
                if fut is not None and not fut.done():
                    fut.set_result(flags)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            err = RuntimeError(f"signature verifier process {proc.pid} exited: {e}")
        except asyncio.CancelledError:
            err = RuntimeError("signature verifiers stopped")
        self._broken = err
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(err)
        self._waiting.clear()

    async def verify(self, checks: Sequence[tuple[str, bytes, str]], chunk: int = 128) -> list[bool]:
        """For each (public key hex, message, signature hex): does the signature verify?
        Raises RuntimeError once a verifier process has gone away."""
        await self.start()
        if self._broken is not None:
            raise self._broken
        out = [False] * len(checks)
        jobs: list[tuple[int, list[int], asyncio.Future[bytes]]] = []
        loop = asyncio.get_running_loop()
        for start in range(0, len(checks), chunk):
            parts: list[bytes] = []
            positions: list[int] = []
            for i in range(start, min(start + chunk, len(checks))):
                key_hex, message, sig_hex = checks[i]
                key, sig = _hex_bytes(key_hex, 32), _hex_bytes(sig_hex, 64)
                if key is None or sig is None:
                    continue  # malformed: does not verify
                parts += (key, sig, _LEN.pack(len(message)), message)
                positions.append(i)
            if not positions:
                continue
            k = min(range(len(self._procs)), key=self._load.__getitem__)
            proc = self._procs[k]
            if proc.returncode is not None or proc.stdin is None:
                raise RuntimeError(f"signature verifier process {proc.pid} is gone")
            job = next(self._ids)
            body = _LEN.pack(len(positions)) + b"".join(parts)
            fut: asyncio.Future[bytes] = loop.create_future()
            self._waiting[job] = fut
            self._load[k] += len(positions)
            proc.stdin.write(_HEAD.pack(job, len(body)) + body)
            jobs.append((job, positions, fut))
        for k, proc in enumerate(self._procs):
            if self._load[k] and proc.stdin is not None and proc.stdin.transport.get_write_buffer_size() > 1 << 20:
                await proc.stdin.drain()
        for _, positions, fut in jobs:
            flags = await fut
            for i, ok in zip(positions, flags, strict=True):
                out[i] = ok == 1
        return out

    async def close(self) -> None:
        for proc in self._procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self._procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self._readers:
            task.cancel()
        self._procs.clear()
        self._readers.clear()


def _serve(inp: BinaryIO, out: BinaryIO) -> None:
    from ledger.keys import signature_ok  # the one verification (PROTOCOL.md 1, strict)

    while True:
        head = inp.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return
        job, size = _HEAD.unpack(head)
        data = inp.read(size)
        if len(data) < size:
            return
        (count,) = _LEN.unpack_from(data, 0)
        at = 4
        flags = bytearray(count)
        for n in range(count):
            key, sig = data[at:at + 32], data[at + 32:at + 96]
            (length,) = _LEN.unpack_from(data, at + 96)
            message = data[at + 100:at + 100 + length]
            at += 100 + length
            if signature_ok(key, message, sig):
                flags[n] = 1
        out.write(_ANSWER.pack(job, count) + bytes(flags))
        out.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError):
        _serve(sys.stdin.buffer, sys.stdout.buffer)
    os._exit(0)


if __name__ == "__main__":
    main()
