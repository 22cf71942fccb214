"""A Redis Cluster and a Sentinel-managed Redis for the suites (issue 18).

    RedisCluster    3 primaries + 3 replicas (redis-server --cluster-enabled
                    yes x6, redis-cli --cluster create ... --cluster-replicas
                    1), with a primary killed, a slot resharded
    RedisSentinel   a primary, a replica and three sentinels, with a
                    failover asked for or a primary killed

Both listen on loopback ports the kernel picked and live in the test's
directory; each has .spec (the store text the three programs take),
.client() (a redis-py client of the whole store) and .as_redis() (what
the single-Redis helpers take: .address is the spec, .client the
client).  Every wait is a poll on a condition with a deadline.

The sentinels are plain `redis-server CONF --sentinel`, not Debian's
redis-sentinel package: that package starts a system service on port
26379 when installed, which a test must neither depend on nor disturb,
and the binary it ships is a link to redis-server anyway.  The sentinels
are told of each other and of the replica in their configuration
(`sentinel myid`, `known-sentinel`, `known-replica`), so that they agree
at once instead of after their hello messages (every 2 s).
"""

import os
import random
import secrets
import signal
import socket
import subprocess
import time
import types

import redis as redis_py
import redis.cluster as redis_cluster

from helpers.procs import REDIS_BIN, free_port, wait_for


REDIS_CLI = "/usr/bin/redis-cli"
NSLOTS = 16384
HOST = "127.0.0.1"

# the settings toll asks of its Redis (docs/deploy.md), plus fast
# replication for tests: no 5 s wait before a diskless full sync
COMMON_ARGS = ["--appendonly", "yes", "--save", "",
               "--maxmemory-policy", "noeviction",
               "--repl-diskless-sync", "yes",
               "--repl-diskless-sync-delay", "0",
               "--daemonize", "no", "--protected-mode", "no"]


def _bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def cluster_port():
    """A port for a cluster node: its bus listens 10000 higher, so both
    must be free, and Redis refuses ports above 55535.  Taken from below
    the kernel's ephemeral range (32768 and up on Linux), bus included,
    so that no outgoing connection is handed either of them meanwhile."""
    rnd = random.SystemRandom()
    for _ in range(1000):
        port = rnd.randrange(12000, 22000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def key_slot(key):
    """The hash slot of a key (CRC16 of its hash tag, as Redis does)."""
    if isinstance(key, str):
        key = key.encode()
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    return redis_cluster.key_slot(key)


class _Node:
    """One redis-server process on its own port and directory."""

    def __init__(self, workdir, args, port=None, name="redis"):
        self.port = port or free_port()
        self.dir = os.path.join(str(workdir), "%s-%d" % (name, self.port))
        os.makedirs(self.dir, exist_ok=True)
        self.args = args
        self.proc = None
        self.log = os.path.join(self.dir, "server.log")
        self.r = redis_py.Redis(host=HOST, port=self.port,
                                decode_responses=True, socket_timeout=5,
                                socket_connect_timeout=1)

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    def spawn(self, first=()):
        self.proc = subprocess.Popen(
            [REDIS_BIN] + list(first) + ["--port", str(self.port),
                                         "--bind", HOST, "--dir", self.dir,
                                         "--logfile", self.log]
            + self.args,
            cwd=self.dir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ping(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("redis-server on %d exited with %s; log:\n%s"
                               % (self.port, self.proc.returncode,
                                  self.log_tail()))
        try:
            return self.r.ping()
        except redis_py.exceptions.RedisError:
            return False

    def log_tail(self):
        try:
            with open(self.log) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def kill(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)   # if it was frozen
            self.proc.kill()
        self.proc.wait(10)
        self.proc = None
        self.r.connection_pool.disconnect()

    def safe(self, *args):
        """A command, or None if the node does not answer."""
        try:
            return self.r.execute_command(*args)
        except redis_py.exceptions.RedisError:
            return None


def _parse_kv(text):
    """INFO-style text (or redis-py's parsed INFO) as {name: str}."""
    if isinstance(text, dict):
        return {k: str(v) for k, v in text.items()}
    out = {}
    for line in (text or "").splitlines():
        k, _, v = line.strip().partition(":")
        if k:
            out[k] = v
    return out


# ------------------------------------------------------------- cluster


class RedisCluster:
    """Six cluster-enabled redis-servers: 3 primaries, 3 replicas."""

    def __init__(self, workdir, primaries=3, node_timeout_ms=1000):
        self.workdir = str(workdir)
        self.node_timeout_ms = node_timeout_ms
        self.nodes = []
        self._client = None
        t0 = time.monotonic()
        try:
            for _ in range(primaries * 2):
                n = _Node(self.workdir, [
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(node_timeout_ms),
                    # a replica behind its primary still takes over: the
                    # tests kill primaries on purpose
                    "--cluster-replica-validity-factor", "0",
                    # keep the 3 x (primary + replica) shape the tests
                    # reason about
                    "--cluster-allow-replica-migration", "no",
                ] + COMMON_ARGS, port=cluster_port(), name="cluster")
                n.spawn()
                self.nodes.append(n)
            for n in self.nodes:
                wait_for(n.ping, 10, what="cluster node %d" % n.port)
            r = subprocess.run(
                [REDIS_CLI, "--cluster", "create"]
                + [n.address for n in self.nodes]
                + ["--cluster-replicas", "1", "--cluster-yes"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=60)
            if r.returncode != 0:
                raise RuntimeError("redis-cli --cluster create failed:\n%s"
                                   % r.stdout.decode(errors="replace"))
            self.wait_healthy(20)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0

    # -- what the programs are given

    @property
    def spec(self):
        """The seeds: the first three nodes (whatever their role)."""
        return "cluster=" + ",".join(n.address for n in self.nodes[:3])

    @property
    def address(self):
        return self.spec

    def client(self):
        """A redis.cluster.RedisCluster on the live nodes (cached; made
        again after a kill so that it never seeds from a dead node)."""
        if self._client is None:
            live = [n for n in self.nodes if n.alive()]
            self._client = redis_cluster.RedisCluster(
                startup_nodes=[redis_cluster.ClusterNode(HOST, n.port)
                               for n in live],
                decode_responses=True, socket_timeout=5,
                cluster_error_retry_attempts=10)
        return self._client

    def as_redis(self):
        """For the single-Redis helpers: .address (the spec), .client."""
        return types.SimpleNamespace(address=self.spec,
                                     spec=self.spec, client=self.client())

    def _drop_client(self):
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 -- closing a client only
                pass
            self._client = None

    # -- topology

    def node(self, which):
        """A node by port, node id or _Node."""
        if isinstance(which, _Node):
            return which
        for n in self.nodes:
            if which in (n.port, str(n.port), n.address) or (
                    n.alive() and which == self.node_id(n)):
                return n
        raise KeyError(which)

    def node_id(self, n):
        return n.safe("CLUSTER", "MYID")

    def _live(self):
        return [n for n in self.nodes if n.alive()]

    def slots_map(self, via=None):
        """[(start, end, primary port, [replica ports])] as one live node
        sees it."""
        for n in ([via] if via else self._live()):
            raw = n.safe("CLUSTER", "SLOTS")
            if raw:
                return sorted((int(e[0]), int(e[1]), int(e[2][1]),
                               tuple(sorted(int(x[1]) for x in e[3:])))
                              for e in raw)
        return []

    def primary_of(self, slot_or_key):
        """The _Node serving a slot (or a key's slot), as the live nodes
        agree."""
        slot = (slot_or_key if isinstance(slot_or_key, int)
                else key_slot(slot_or_key))
        for s, e, port, _ in self.slots_map():
            if s <= slot <= e:
                return self.node(port)
        raise KeyError("no node serves slot %d" % slot)

    def primaries(self):
        return [self.node(p) for p in
                sorted({port for _, _, port, _ in self.slots_map()})]

    def replica_of(self, primary):
        pid = self.node_id(primary)
        for n in self._live():
            info = _parse_kv(n.safe("INFO", "replication"))
            if info.get("role") == "slave" and \
                    int(info.get("master_port", 0)) == primary.port:
                return n
        raise KeyError("no replica of %s (%s)" % (primary.port, pid))

    def _healthy(self):
        live = self._live()
        for n in live:
            if _parse_kv(n.safe("CLUSTER", "INFO")).get(
                    "cluster_state") != "ok":
                return False
        maps = [tuple(self.slots_map(n)) for n in live]
        if not maps[0] or len(set(maps)) != 1:
            return False
        if sum(e - s + 1 for s, e, _, _ in maps[0]) != NSLOTS:
            return False
        # every primary has its replica (INFO, not CLUSTER SLOTS: that
        # lists a replica only once gossip brought its offset, seconds
        # later)
        serving = {port for _, _, port, _ in maps[0]}
        followers = set()
        for n in live:
            info = _parse_kv(n.safe("INFO", "replication"))
            if info.get("role") == "slave":
                if info.get("master_link_status") != "up" or \
                        info.get("master_sync_in_progress") != "0":
                    return False
                followers.add(n.port)
                primary = self.node(int(info["master_port"]))
                pinfo = _parse_kv(primary.safe("INFO", "replication"))
                if info.get("slave_repl_offset") != pinfo.get(
                        "master_repl_offset"):
                    return False
        if followers != {n.port for n in live} - serving:
            return False
        return True

    def wait_healthy(self, timeout=20):
        """cluster_state:ok on every live node, one slot map all agree on,
        every replica linked and caught up."""
        wait_for(self._healthy, timeout, interval=0.05,
                 what="cluster healthy")

    # -- faults

    def kill_primary(self, slot_or_key, timeout=20):
        """SIGKILLs the primary of a slot (or key); returns once its
        replica serves the slot and every live node says cluster_state:ok.
        Returns (killed node, promoted node, seconds)."""
        victim = self.primary_of(slot_or_key)
        heir = self.replica_of(victim)
        self._drop_client()
        t0 = time.monotonic()
        victim.kill()

        def promoted():
            if self.primary_of(slot_or_key).port != heir.port:
                return False
            return all(_parse_kv(n.safe("CLUSTER", "INFO")).get(
                "cluster_state") == "ok" for n in self._live())

        wait_for(promoted, timeout, interval=0.02,
                 what="replica %d promoted" % heir.port)
        return victim, heir, time.monotonic() - t0

    def revive(self, timeout=20):
        """Starts every killed node again (same port, nodes.conf, data):
        each rejoins as a replica; returns once the cluster is healthy."""
        for n in self.nodes:
            if not n.alive():
                n.spawn()
        for n in self.nodes:
            wait_for(n.ping, 10, what="node %d back" % n.port)
        self.wait_healthy(timeout)
        self._drop_client()

    def reshard(self, slot_or_key, to_node, batch=100, between=None):
        """Moves one slot with its keys to `to_node` (port, id or node),
        as redis-cli does it: IMPORTING on the target, MIGRATING on the
        source, MIGRATE the keys in batches (between(), if given, runs
        after each batch: the ASK window), then SETSLOT NODE on every
        primary.  Returns (source, target)."""
        slot = (slot_or_key if isinstance(slot_or_key, int)
                else key_slot(slot_or_key))
        src = self.primary_of(slot)
        dst = self.node(to_node)
        if src.port == dst.port:
            return src, dst
        src_id, dst_id = self.node_id(src), self.node_id(dst)
        dst.r.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING",
                              src_id)
        src.r.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING",
                              dst_id)
        while True:
            keys = src.r.execute_command("CLUSTER", "GETKEYSINSLOT", slot,
                                         batch)
            if not keys:
                break
            src.r.execute_command("MIGRATE", HOST, dst.port, "", 0, 5000,
                                  "REPLACE", "KEYS", *keys)
            if between is not None:
                between()
        for n in (dst, src) + tuple(p for p in self.primaries()
                                    if p.port not in (src.port, dst.port)):
            n.r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self.wait_healthy(20)
        return src, dst

    def reshard_cli(self, from_node, to_node, nslots):
        """`redis-cli --cluster reshard`: moves `nslots` slots (the lowest
        of the source's) with their keys; returns the slots moved."""
        src, dst = self.node(from_node), self.node(to_node)
        before = {s for s, e, port, _ in self.slots_map()
                  if port == src.port for s in range(s, e + 1)}
        r = subprocess.run(
            [REDIS_CLI, "--cluster", "reshard", src.address,
             "--cluster-from", self.node_id(src),
             "--cluster-to", self.node_id(dst),
             "--cluster-slots", str(nslots), "--cluster-yes"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("redis-cli --cluster reshard failed:\n%s"
                               % r.stdout.decode(errors="replace"))
        self.wait_healthy(20)
        after = set()
        for s, e, port, _ in self.slots_map():
            if port == src.port:
                after |= set(range(s, e + 1))
        return sorted(before - after)

    def stop(self):
        self._drop_client()
        for n in self.nodes:
            n.kill()


# ------------------------------------------------------------ sentinel


# down-after 2 s: a sentinel PINGs each instance once a second, and with
# down-after 1 s the first reply after start-up could come late; two
# sentinels that thought so voted a failover no test asked for, and the
# money writes of the next tests waited seconds for a replica
# (test_sentinel_quiet_after_start)
SENTINEL_CONF = """\
port {port}
bind 127.0.0.1
protected-mode no
daemonize no
dir {dir}
logfile {dir}/sentinel.log
sentinel myid {myid}
sentinel monitor {master} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {master} 2000
sentinel failover-timeout {master} 5000
sentinel parallel-syncs {master} 1
sentinel known-replica {master} 127.0.0.1 {replica}
{known}
"""


class RedisSentinel:
    """A primary, a replica (--replicaof) and three sentinels watching
    them under the name `master`."""

    def __init__(self, workdir, master="toll"):
        self.workdir = str(workdir)
        self.master = master
        self._client = None
        t0 = time.monotonic()
        self.data = []
        self.sentinels = []
        try:
            primary = _Node(self.workdir, list(COMMON_ARGS), name="data")
            replica = _Node(self.workdir, list(COMMON_ARGS), name="data")
            replica.args += ["--replicaof", HOST, str(primary.port)]
            self.data = [primary, replica]
            for n in self.data:
                n.spawn()
            ids = [secrets.token_hex(20) for _ in range(3)]
            ports = [free_port() for _ in range(3)]
            for i in range(3):
                s = _Node(self.workdir, [], port=ports[i], name="sentinel")
                known = "\n".join(
                    "sentinel known-sentinel %s 127.0.0.1 %d %s"
                    % (master, ports[j], ids[j]) for j in range(3) if j != i)
                conf = os.path.join(s.dir, "sentinel.conf")
                with open(conf, "w") as f:
                    f.write(SENTINEL_CONF.format(
                        port=s.port, dir=s.dir, myid=ids[i], master=master,
                        primary=primary.port, replica=replica.port,
                        known=known))
                s.log = os.path.join(s.dir, "sentinel.log")
                s.proc = subprocess.Popen(
                    [REDIS_BIN, conf, "--sentinel"], cwd=s.dir,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT)
                self.sentinels.append(s)
            for n in self.data + self.sentinels:
                wait_for(n.ping, 10, what="redis on %d" % n.port)
            wait_for(self._ready, 20, interval=0.05,
                     what="sentinels to agree and the replica to sync")
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0

    @property
    def spec(self):
        return "sentinel=%s master=%s" % (
            ",".join(s.address for s in self.sentinels), self.master)

    @property
    def address(self):
        return self.spec

    def primary_port(self, sentinel):
        r = sentinel.safe("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)
        return int(r[1]) if r else None

    def named_primary(self):
        """The primary every live sentinel names, or None."""
        ports = {self.primary_port(s) for s in self.sentinels if s.alive()}
        return self.node(ports.pop()) if len(ports) == 1 and \
            None not in ports else None

    def node(self, port):
        for n in self.data:
            if n.port == port:
                return n
        raise KeyError(port)

    def primary(self):
        p = self.named_primary()
        if p is None:
            raise RuntimeError("the sentinels do not agree on a primary")
        return p

    def replicas(self):
        p = self.primary()
        return [n for n in self.data if n is not p and n.alive()]

    def _role(self, n):
        r = n.safe("ROLE")
        return r[0] if r else None

    def _ready(self):
        p = self.named_primary()
        if p is None or self._role(p) != "master":
            return False
        for s in self.sentinels:
            if not s.alive():
                continue
            if len(s.safe("SENTINEL", "SENTINELS", self.master) or []) \
                    < 2:
                return False
            reps = s.safe("SENTINEL", "REPLICAS", self.master) or []
            live_reps = [n.port for n in self.data
                         if n.alive() and n is not p]
            # as SENTINEL FAILOVER judges a replica: linked, INFO
            # fresh (3 INFO periods of 10 s), no flag but "slave" (else
            # NOGOODSLAVE)
            ok = []
            for r in reps:
                d = dict(zip(r[::2], r[1::2]))
                if d.get("flags") == "slave" and \
                        d.get("master-link-status") == "ok" and \
                        int(d.get("master-port", 0)) == p.port and \
                        int(d.get("info-refresh", 1 << 30)) < 30000:
                    ok.append(int(d["port"]))
            if len(ok) < len(live_reps):
                return False
        pinfo = _parse_kv(p.safe("INFO", "replication"))
        for n in self.data:
            if n is p or not n.alive():
                continue
            info = _parse_kv(n.safe("INFO", "replication"))
            if info.get("master_link_status") != "up" or \
                    int(info.get("master_port", 0)) != p.port or \
                    info.get("slave_repl_offset") != pinfo.get(
                        "master_repl_offset"):
                return False
        return True

    def client(self):
        """A redis.Redis of the current primary (made again after a
        failover)."""
        p = self.primary()
        if self._client is None or \
                self._client.connection_pool.connection_kwargs[
                    "port"] != p.port:
            self._drop_client()
            self._client = redis_py.Redis(host=HOST, port=p.port,
                                          decode_responses=True,
                                          socket_timeout=5)
        return self._client

    def as_redis(self):
        return types.SimpleNamespace(address=self.spec, spec=self.spec,
                                     client=self.client())

    def _drop_client(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def _wait_switch(self, old, timeout):
        def switched():
            p = self.named_primary()
            return p is not None and p is not old and \
                self._role(p) == "master"
        wait_for(switched, timeout, interval=0.02,
                 what="sentinels to name a new primary")

    def wait_ready(self, timeout=30):
        """Every sentinel names the primary and sees the live replicas as
        fit to promote; every replica follows the primary, caught up."""
        wait_for(self._ready, timeout, interval=0.05,
                 what="sentinels to agree and the replicas to sync")

    def _follow(self, new, timeout):
        """The data nodes other than `new` made replicas of it at once
        (the sentinels convert a demoted primary only after 8 s) and
        caught up."""
        for n in self.data:
            if n is not new and n.alive() and self._role(n) != "slave":
                n.r.execute_command("REPLICAOF", HOST, new.port)

        def synced():
            pinfo = _parse_kv(new.safe("INFO", "replication"))
            for n in self.data:
                if n is new or not n.alive():
                    continue
                info = _parse_kv(n.safe("INFO", "replication"))
                if info.get("master_link_status") != "up" or \
                        int(info.get("master_port", 0)) != new.port or \
                        info.get("slave_repl_offset") != pinfo.get(
                            "master_repl_offset"):
                    return False
            return True
        wait_for(synced, timeout, interval=0.05,
                 what="replicas to follow %d" % new.port)

    def failover(self, timeout=20):
        """SENTINEL FAILOVER (once the sentinels see a replica fit to
        promote): returns (old primary, new primary, seconds from the
        command until every sentinel names the new one and it answers
        ROLE master); the old one then follows the new one."""
        self.wait_ready()
        old = self.primary()
        t0 = time.monotonic()
        self.sentinels[0].r.execute_command("SENTINEL", "FAILOVER",
                                            self.master)
        self._wait_switch(old, timeout)
        took = time.monotonic() - t0
        self._drop_client()
        new = self.primary()
        self._follow(new, timeout)
        return old, new, took

    def kill_primary(self, timeout=20):
        """SIGKILL of the primary; returns (killed, promoted, seconds) once
        the sentinels name the replica and it answers ROLE master."""
        self.wait_ready()
        old = self.primary()
        t0 = time.monotonic()
        old.kill()
        self._wait_switch(old, timeout)
        self._drop_client()
        return old, self.primary(), time.monotonic() - t0

    def revive(self, timeout=20):
        """Starts the killed data node again; the sentinels make it a
        replica of the current primary."""
        p = self.primary()
        for n in self.data:
            if not n.alive():
                # told whom to follow: the sentinels would do it too, but
                # only after seconds of seeing a second primary
                n.args = [a for a in COMMON_ARGS] + [
                    "--replicaof", HOST, str(p.port)]
                n.spawn()
                wait_for(n.ping, 10, what="redis on %d" % n.port)
        self._follow(p, timeout)

    def stop(self):
        self._drop_client()
        for n in self.sentinels + self.data:
            n.kill()
