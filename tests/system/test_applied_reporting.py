"""What a node says it applied is in its database.

A node's /status applied_index is what tests (Cluster.wait_converged) and operators
compare to decide that replicas hold the same data, and what /readyz is computed from.
A follower runs the entries of a loop turn together at the end of the turn (fsm.c,
"grouped apply"): libraft counts them as applied at once, the database holds them only
once the turn commits them. Before c1ff2c9 the follower's tick published libraft's
figure in between; a node catching up (a restart: a snapshot, then thousands of entries
in a few appends) said it had applied up to 1,024 entries its database did not hold yet
for as long as the group took to run. Under make tsan with CPU load, test_live_restore's
5-node test then read 821 of 1,852 acknowledged writes missing from a node after every
node's /status showed the same applied index.

Checked here on real cairnd processes while a restarted follower catches up (a
snapshot install, then the log) under a write load: every sample of its /status is
followed by a read of its own rows, and every write acknowledged at a log index at or
below the applied index it reported must be among them. Then the follower is paused
(SIGSTOP) and resumed a few times under the same load, each resumption another
catch-up in large groups.
"""
import threading

from clusterutil import ClusterWriters, assert_acked_present, assert_applied_means_present
from conftest import deadline_seconds, wait_until
from test_cluster import cluster_factory, ok_results, post  # noqa: F401 - fixture


ROUNDS = 8  # pauses of the follower (freeze, writes, thaw) after its restart


class Missing(Exception):
    pass


class Sampler:
    """A thread checking assert_applied_means_present on node until stopped; keeps the
    first failure and how many samples covered acknowledged writes."""

    def __init__(self, node, writers, table="t"):
        self.node, self.writers, self.table = node, writers, table
        self.failure = None
        self.samples = 0
        self.covering = 0  # samples in which the reported index covered some write
        self.indexes = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _check(self):
        """The newest acknowledged write at or below the reported index is in the
        database (a database commits entries in order: the ones before it are there
        too; the test's end checks every one). A point query, so that samples are
        frequent: the gap this looks for lasted as long as a group's commit."""
        applied = self.node.raft().get("applied_index")
        if applied is None:
            return None
        with self.writers.lock:
            below = [(i, k) for k, i in self.writers.acked_index.items() if i <= applied]
        if not below:
            return applied, 0
        index, (c, s) = max(below)
        got = self.node.local_rows("SELECT count(*) FROM %s WHERE client = %d AND seq = %d"
                                   % (self.table, c, s))
        if got != [[1]]:
            raise Missing("%s: /status said applied_index %d, but the write acknowledged at "
                          "index %d (client %d, seq %d) is not in its database"
                          % (self.node.name, applied, index, c, s))
        return applied, len(below)

    def _run(self):
        while not self.stopping.is_set() and self.failure is None:
            try:
                got = self._check()
            except Missing as e:
                self.failure = str(e)
                return
            except Exception:  # noqa: BLE001 - the node restarts: not answering is fine
                got = None
            if got is not None:
                self.samples += 1
                self.covering += got[1] > 0
                self.indexes.add(got[0])

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.thread.join(deadline_seconds(30))
        assert not self.thread.is_alive(), "the sampler hangs"
        assert self.failure is None, self.failure
        return self


def test_a_follower_catching_up_reports_only_what_its_database_holds(cluster_factory):
    """A follower stopped while thousands of writes commit comes back, installs a
    snapshot and replays the rest of the log under more writes; throughout, what its
    /status says it applied is in its database."""
    c = cluster_factory(3, extra_args=["--snapshot-threshold", "512",
                                       "--snapshot-trailing", "64"])
    leader = c.leader()
    late, other = c.followers(leader)
    ok_results(post(leader, "/db/execute", [
        "CREATE TABLE t (client INTEGER, seq INTEGER, pad BLOB, UNIQUE(client, seq))"]),
        "CREATE")
    c.wait_converged()
    assert late.stop() == 0
    writers = ClusterWriters([leader, other], table="t", clients=8, pad=64, give_up=60,
                             raft_index=True).start()
    writers.wait_more(3000, timeout=deadline_seconds(180))
    sampler = Sampler(late, writers).start()
    late.start(wait=False)
    late.wait_ready(timeout=deadline_seconds(120))
    writers.wait_more(300)
    # More catching up: each thaw hands the follower the backlog of its pause in one
    # append, which it applies as groups of up to 1,024 entries.
    for _ in range(ROUNDS):
        late.freeze()
        writers.wait_more(400)
        late.thaw()
        wait_until(lambda: (late.applied_index() or 0) >= (leader.raft().get("commit_index") or 0),
                   deadline_seconds(60), "%s to catch up" % late.name, interval=0.02)
    acked = writers.stop()
    c.wait_converged(timeout=deadline_seconds(90))
    sampler.stop()
    assert "restored from snapshot" in late.stderr_text(), \
        "the follower did not install a snapshot: the test does not test what it says"
    # Not vacuous: samples were taken while it caught up, at several indexes.
    assert sampler.covering > 0 and len(sampler.indexes) > 1, (
        sampler.samples, sampler.covering, sorted(sampler.indexes)[:20])
    print("samples %d, covering writes %d, distinct applied indexes %d"
          % (sampler.samples, sampler.covering, len(sampler.indexes)))
    for n in c.nodes:
        applied, covered = assert_applied_means_present(n, "t", writers, "converged")
        assert covered == len(acked), (n.name, applied, covered, len(acked))
        assert_acked_present(n, "t", acked, "converged")
    c.assert_same_rows("t", order="client, seq")
