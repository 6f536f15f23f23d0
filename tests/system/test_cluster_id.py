"""Every cluster has an id (cluster.h): minted when it is formed, the same on every node
(learned before a node first joins), kept in DATA/cluster-id, shown by GET /status and
GET /cluster/identity, and carried by every Raft connection (test_raft_stray.py shows
the refusals). A data directory of one cluster is not let into another."""
import re
import socket

from conftest import assert_exec_ok, wait_until
from test_cluster import cluster_factory, ok_results, post  # noqa: F401 - fixture

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def ids(nodes):
    return {n.get_json("/status")["node"]["cluster_id"] for n in nodes}


def file_id(node):
    return (node.data_dir / "cluster-id").read_text()


def test_every_node_of_a_cluster_has_one_id(cluster_factory):
    formed = cluster_factory(3, mode="expect")
    joined = cluster_factory(3, mode="join")
    (a,) = ids(formed.nodes)
    (b,) = ids(joined.nodes)
    assert HEX32.match(a) and HEX32.match(b) and a != b, (a, b)
    for c, cid in ((formed, a), (joined, b)):
        for n in c.nodes:
            assert file_id(n) == cid + "\n", n.name
            assert n.get_json("/cluster/identity")["cluster_id"] == cid
    # A node added later learns it; a restarted node keeps it.
    late = joined.add_node()
    assert ids([late]) == {b}, late.stderr_text()
    n = joined.nodes[0]
    assert n.stop() == 0
    n.start()
    assert ids([n]) == {b}
    joined.wait_converged()


def test_a_single_node_mints_its_own(server_factory):
    one = server_factory()
    two = server_factory()
    (x,) = ids([one])
    (y,) = ids([two])
    assert HEX32.match(x) and HEX32.match(y) and x != y
    assert file_id(one) == x + "\n"


def test_another_clusters_data_directory_is_refused(cluster_factory):
    a = cluster_factory(3, mode="join")
    b = cluster_factory(3, mode="join")
    (a_id,) = ids(a.nodes)
    (b_id,) = ids(b.nodes)
    node = a.followers()[0]
    assert node.stop() == 0
    # Its Raft log gone (as after a reset), it is started to join cluster b.
    import shutil
    shutil.rmtree(node.data_dir / "raft")
    node.cluster_args = ["--join", b.nodes[0].url]
    node.start(wait=False)
    rc = node.wait_exit(timeout=40)
    assert rc != 0
    text = node.stderr_text()
    assert ("belongs to cluster %s, and the nodes --join names are of cluster %s"
            % (a_id, b_id)) in text, text
    assert len(b.leader().nodes()) == 3


def test_a_damaged_cluster_id_file_is_refused(server_factory):
    s = server_factory()
    assert s.stop() == 0
    (s.data_dir / "cluster-id").write_text("not an id\n")
    s.start(wait=False)
    assert s.wait_exit(timeout=20) != 0
    text = s.stderr_text()
    assert "cluster-id is damaged" in text, text


def handshake(port, sender_id, address):
    """Open a Raft connection as libraft's TCP transport does: its handshake (protocol 1,
    the sender's id, the length of its address padded to 8 bytes, the address and NULs),
    little-endian."""
    import struct
    raw = address.encode() + b"\0"
    raw += b"\0" * (-len(raw) % 8)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(struct.pack("<QQQ", 1, sender_id, len(raw)) + raw)
    return s


def closed_by_peer(sock):
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_handshakes_naming_another_or_no_readable_cluster_id_are_refused(server_factory):
    s = server_factory()
    (mine,) = ids([s])
    other = "%032x" % (int(mine, 16) ^ 1)
    for addr, why in (("127.0.0.1:1#cluster=" + other, "it is a node of another cluster"),
                      ("127.0.0.1:2#cluster=" + "0" * 32, "it is a node of another cluster"),
                      ("127.0.0.1:3#cluster=zz", "names no cluster id cairn can read"),
                      ("127.0.0.1:4#cluster=" + mine + "00",
                       "names no cluster id cairn can read"),
                      ("127.0.0.1:5#" + "x" * 300, "names no cluster id cairn can read")):
        sock = handshake(s.raft_port, 7, addr)
        try:
            assert closed_by_peer(sock), addr
        finally:
            sock.close()
        plain = addr.split("#")[0]

        def logged():
            return [line for line in s.stderr_text().splitlines()
                    if "refused a Raft connection from server 7 at %s" % plain in line
                    and why in line]
        wait_until(logged, 10, "the refusal of %s to be logged" % addr[:40])
    # Its own id, and no id at all (a build before ids): let through to libraft, which
    # keeps the connection open for messages.
    for addr in ("127.0.0.1:6#cluster=" + mine, "127.0.0.1:7"):
        sock = handshake(s.raft_port, 9, addr)
        try:
            sock.settimeout(0.5)
            try:
                got = sock.recv(1)
            except socket.timeout:
                got = None
            assert got is None, (addr, got)
        finally:
            sock.close()
    # The node went on as before.
    assert s.get_json("/status")["raft"]["state"] == "leader"
    assert_exec_ok(s.execute(["CREATE TABLE after (a)"]))
