"""Rank 0's per-step commands to the other ranks of its pod, over local sockets.

Rank 0 sends every step's call (a pickled SchedulerOutput) to each follower. Through gloo
(`broadcast_object_list`: a size broadcast, then the payload) rank 0 waits in both until every
follower has posted its receive, so rank 0's and the followers' host work run one after the other
instead of overlapping (`python bench/tp_commands.py`: rank 0 busy 4 ms a step and a follower 6 ms
take 9.7 ms a step over gloo, 7.6 ms here). On H200s the 256-sequence TP=2 decode step of an 8B model
was 45% GPU-busy with gloo and is 99% with this channel; TP=2 offline throughput +14%, batch 1 +11%
(docs/benchmarks.md).

Here each follower holds one connected Unix socket (abstract namespace, Linux): rank 0 pickles once
and writes length-prefixed bytes into each socket's kernel buffer and goes on; a follower lagging by
more than the buffer holds makes rank 0 wait, which bounds how far ahead it runs. End of stream on a
follower's side means rank 0 is gone. Only for ranks of one pod: a group spanning pods keeps gloo.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct

_HEADER = struct.Struct("<Q")
_PEER = struct.Struct("3i")  # struct ucred: pid, uid, gid
SEND_BUFFER = 4 << 20  # the kernel caps it (net.core.wmem_max); a few 256-sequence steps either way


class CommandChannel:
    def __init__(self, conns: list[socket.socket]):
        self.conns = conns  # rank 0: one per follower; a follower: its one connection to rank 0

    @staticmethod
    def listen(tag: str) -> tuple[socket.socket, str]:
        """Rank 0's listening socket and the address the followers connect to."""
        address = f"\0fms-commands-{os.getpid()}-{tag}"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(address)
        server.listen()
        return server, address

    @classmethod
    def accept(cls, server: socket.socket, followers: int, timeout_s: float = 300.0) -> "CommandChannel":
        """The followers' connections; one from another user (the abstract namespace is the pod's) is
        dropped."""
        server.settimeout(timeout_s)
        conns = []
        try:
            while len(conns) < followers:
                conn, _ = server.accept()
                _pid, uid, _gid = _PEER.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER.size))
                if uid != os.getuid():
                    conn.close()
                    continue
                conn.settimeout(None)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                conns.append(conn)
        except BaseException:
            for conn in conns:
                conn.close()
            raise
        finally:
            server.close()
        return cls(conns)

    @classmethod
    def connect(cls, address: str) -> "CommandChannel":
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(address)
        except BaseException:
            conn.close()
            raise
        return cls([conn])

    def send(self, obj) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        header = _HEADER.pack(len(data))
        for conn in self.conns:
            conn.sendall(header)
            conn.sendall(data)

    def recv(self):
        (size,) = _HEADER.unpack(self._read(_HEADER.size))
        return pickle.loads(self._read(size))

    def _read(self, n: int) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = self.conns[0].recv_into(view[got:])
            if k == 0:
                raise ConnectionError("rank 0 closed the command channel")
            got += k
        return buf

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.conns = []
