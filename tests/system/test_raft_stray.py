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
stopped" line.
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
    wait_until(lambda: "ignored an AppendEntries message from server %d at %s"
               % (leader.id, leader.raft_addr) in single.stderr_text(),
               deadline_seconds(30), "the single node to see the cluster's appends")
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
    # Said once per sender, not once per message.
    assert text.count("ignored ") < 10, text
    # Nothing of the cluster's reached it, and the cluster goes on without it.
    assert single.rows("SELECT name FROM sqlite_schema WHERE name = 'x'", level="none") == []
    ok_results(post(leader, "/db/execute", ["INSERT INTO x VALUES(2)"]), "write after")
