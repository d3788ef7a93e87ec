#!/usr/bin/env bash
# Linearizability (test_linearizability.sh) on a 3-member cluster whose leader compacts its log
# after 100 entries, with faults that keep a follower down for seconds (it comes back through a
# snapshot install) and that remove a follower, wipe it and add it back (it rejoins empty), while
# clients read, write and compare-and-swap. Zero violations, at least one install, and at least one
# fault of each kind (whole member down, membership change, kill -9, SIGSTOP). Those take ~30 s
# together on a loaded machine (a membership change alone several seconds), hence the duration.
# a small log budget: the leader keeps the log for a member that is down only within it, so a
# follower kept down a few seconds comes back through a snapshot
export T_EXTRA_FLAGS="--snapshot-count 100 --raft-log-memory-bytes 4096" LIN_LONG_FAULTS=1 LIN_MEMBERSHIP=1 LIN_EXPECT_SNAPSHOT=1
export LIN_DURATION=${LIN_DURATION:-40} LIN_FAULTS=${LIN_FAULTS:-8}
exec bash "$(dirname "$0")/test_linearizability.sh"
