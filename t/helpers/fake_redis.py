"""A fake Redis node for the adapter's fault tests (a thread speaking
RESP on a loopback port): answers what a test's function says, and can
play a server that answers PING then hangs up."""

import socket
import threading

from helpers.cluster import key_slot
from helpers.procs import free_port



def enc(v):
    """Python value -> RESP: str simple, bytes bulk, int, list, None,
    Exception error."""
    if v is None:
        return b"$-1\r\n"
    if isinstance(v, Exception):
        return b"-" + str(v).encode() + b"\r\n"
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return b":%d\r\n" % v
    if isinstance(v, str):
        return b"+" + v.encode() + b"\r\n"
    if isinstance(v, bytes):
        return b"$%d\r\n%s\r\n" % (len(v), v)
    return b"*%d\r\n" % len(v) + b"".join(enc(x) for x in v)


class Raw(bytes):
    """Bytes sent as they are (for replies no encoder would make)."""


def _read_command(f):
    line = f.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.split()             # inline command
    args = []
    for _ in range(int(line[1:])):
        n = int(f.readline()[1:])
        args.append(f.read(n + 2)[:-2])
    return args


def command_slot(args):
    """The slot of a command's first key (EVAL/EVALSHA: after numkeys)."""
    name = args[0].upper()
    if name in (b"EVAL", b"EVALSHA", b"FCALL") and len(args) > 3:
        return key_slot(args[3])
    return key_slot(args[1]) if len(args) > 1 else 0


class FakeNode:
    """answer(args) -> a reply (see enc) for every command but the few
    every client sends first (PING, HELLO, AUTH, SELECT, CLIENT, READONLY,
    ASKING: +OK/+PONG)."""

    def __init__(self, answer, hangup_after_ping=False):
        self.answer = answer
        self.hangup_after_ping = hangup_after_ping
        self.port = free_port()
        self.commands = []
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        self.sock.settimeout(0.1)
        while not self.stop_ev.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn):
        f = conn.makefile("rb")
        try:
            while True:
                args = _read_command(f)
                if args is None:
                    return
                self.commands.append(args)
                name = args[0].upper() if args else b""
                if name == b"PING":
                    out = enc("PONG")
                elif name in (b"HELLO", b"AUTH", b"SELECT", b"CLIENT",
                              b"READONLY", b"ASKING"):
                    out = enc("OK")
                else:
                    rep = self.answer(args)
                    out = rep if isinstance(rep, Raw) else enc(rep)
                conn.sendall(out)
                if name == b"PING" and self.hangup_after_ping:
                    return
        except OSError:
            return
        finally:
            conn.close()

    def close(self):
        self.stop_ev.set()
        self.sock.close()


def full_map(node):
    return [[0, 16383, [b"127.0.0.1", node.port, b"f" * 40]]]


def slots_then(node_map, other):
    """CLUSTER SLOTS answered with node_map(), everything else other()."""
    def answer(args):
        if args[0].upper() == b"CLUSTER":
            return node_map()
        return other(args)
    return answer
