"""Every cluster has an id (cluster.h): minted when it is formed, the same on every node
(learned before a node first joins), kept in DATA/cluster-id, shown by GET /status and
GET /cluster/identity, and carried by every Raft connection (test_raft_stray.py shows
the refusals). A data directory of one cluster is not let into another."""
import re

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
