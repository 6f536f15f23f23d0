"""A single node ignores the Raft messages of another cluster, and a node whose Raft
stops says why.

Seen once: a single node started by test_backup.py logged "Raft stopped on this node
(libraft: unavailable)" 1 s after it started, with no other message. Made on purpose
here: a node of another cluster at an address a cluster still sends to (a stopped
member's Raft port given to a fresh single node: test runs on one machine hand out
ports independently, and several run at once). libraft 0.15 has no cluster id: the
cluster's leader's appends, of a higher term, made the single node a follower and then
conflicted with entries it had committed, and libraft stopped for good, silently
(before the fix this test's single node logged exactly that line, 0.1 s after it was
ready). Where the terms happen to match, libraft would take the other cluster's entries
into the node's log and apply them.

node.c now stands between libraft's uv I/O and its callbacks: a node alone in its
configuration ignores (and says so) messages from any other server, and whatever else
leaves libraft unavailable (a received message or its tick) is named in the "Raft
stopped" line. And every cluster has an id, which every Raft connection's handshake
carries: a node refuses a connection from another cluster before libraft reads a
message from it, whether it is alone or a member of a larger cluster.
"""
import time

from conftest import deadline_seconds, wait_until
from test_cluster import cluster_factory, ok_results, post  # noqa: F401 - fixture


def test_a_single_node_ignores_another_clusters_leader(cluster_factory, server_factory):
    c = cluster_factory(3)
    leader = c.leader()
    gone = c.followers(leader)[0]
    ok_results(post(leader, "/db/execute", ["CREATE TABLE x (a)", "INSERT INTO x VALUES(1)"]),
               "writes")
    c.wait_converged()
    assert gone.stop() == 0
    # A single node of its own, on the Raft address the cluster's leader still sends to.
    single = server_factory(start=False, name="single")
    single.raft_port = gone.raft_port
    single.start()
    wait_until(lambda: "refused a Raft connection from server %d at %s: it is a node of "
               "another cluster" % (leader.id, leader.raft_addr) in single.stderr_text(),
               deadline_seconds(30), "the single node to refuse the cluster's connections")
    # Past an election timeout and many heartbeats of the other cluster: still its own
    # leader, taking writes, and Raft still runs.
    time.sleep(2)
    ok_results(post(single, "/db/execute", ["CREATE TABLE mine (a)", "INSERT INTO mine VALUES(7)"]),
               "single node's writes")
    assert single.rows("SELECT a FROM mine", level="none") == [[7]]
    raft = single.get_json("/status")["raft"]
    assert raft["state"] == "leader", raft
    text = single.stderr_text()
    assert "Raft stopped on this node" not in text, text
    # Said once per sender, not once per connection attempt.
    assert text.count("refused a Raft connection") < 10, text
    # Nothing of the cluster's reached it, and the cluster goes on without it.
    assert single.rows("SELECT name FROM sqlite_schema WHERE name = 'x'", level="none") == []
    ok_results(post(leader, "/db/execute", ["INSERT INTO x VALUES(2)"]), "write after")


def cluster_ids(nodes):
    return {n.status()["node"]["cluster_id"] for n in nodes}


def test_a_cluster_member_refuses_another_clusters_leader(cluster_factory):
    """The same, where the node that holds the stopped member's Raft port is a member of a
    3-node cluster of its own: not alone in its configuration, so only the cluster id
    tells the other cluster's appends from its own leader's."""
    a = cluster_factory(3)
    leader = a.leader()
    ok_results(post(leader, "/db/execute", ["CREATE TABLE x (a)", "INSERT INTO x VALUES(1)"]),
               "writes")
    a.wait_converged()
    (a_id,) = cluster_ids(a.nodes)
    assert len(a_id) == 32, a_id
    gone = a.followers(leader)[0]
    assert gone.stop() == 0
    b = cluster_factory(3, mode="join", start=False)
    taker = b.nodes[1]
    taker.raft_port = gone.raft_port
    b_leader = b.start()
    (b_id,) = cluster_ids(b.nodes)
    assert len(b_id) == 32 and b_id != a_id, (a_id, b_id)
    wait_until(lambda: "refused a Raft connection from server %d at %s: it is a node of "
               "another cluster" % (leader.id, leader.raft_addr) in taker.stderr_text(),
               deadline_seconds(30), "cluster b's node to refuse cluster a's leader")
    # Past many heartbeats and election timeouts of cluster a: cluster b works and
    # converges, and nothing of cluster a reached it.
    time.sleep(2)
    for i in range(20):
        ok_results(post(b_leader, "/db/execute", ["CREATE TABLE IF NOT EXISTS mine (a)",
                                                  ["INSERT INTO mine VALUES(?)", i]]),
                   "cluster b's writes")
    b.wait_converged()
    for n in b.nodes:
        assert n.local_rows("SELECT count(*) FROM mine") == [[20]], n.name
        assert n.local_rows("SELECT name FROM sqlite_schema WHERE name = 'x'") == [], n.name
        assert "Raft stopped on this node" not in n.stderr_text(), n.name
    # Cluster a goes on with two of its three.
    ok_results(post(a.leader(), "/db/execute", ["INSERT INTO x VALUES(2)"]), "cluster a after")
