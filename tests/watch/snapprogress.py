#!/usr/bin/python3
"""Progress requests on a member whose store jumps by a snapshot (test_watch_snapshot_progress.sh).

One watch stream on ENDPOINT, a prefix watcher from START. The script sends a progress request
every 0.2 s for SECONDS and records every response. Meanwhile the test brings the member's raftd
up, the member installs a snapshot and its store jumps past START without one event published.
It then checks:
  - every revision in EXPECT (a file of "rev" lines: the prefix's revisions above START) arrived,
    once, in order;
  - no event arrived at or below the revision of a progress response sent before it (etcd's
    guarantee, which Kubernetes relies on);
  - the last progress response is at or above the highest expected revision.
It writes READY_FILE once the watcher is created and the first progress answer came.
Exit 0 when all hold, 1 with the reasons otherwise.
"""
import os, queue, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc
from watchcheck import WATCH_PATH, WatchRequest, WatchCreateRequest, WatchProgressRequest, WatchResponse


def main():
    ep, prefix, start, seconds, expect_file, ready_file = sys.argv[1:7]
    start, seconds = int(start), float(seconds)
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    reqs = queue.Queue()

    def gen():
        while True:
            r = reqs.get()
            if r is None:
                return
            yield r

    ch = grpc.insecure_channel(ep)
    # no hasleader metadata: the member has no raftd, so no leader, while the watcher is made
    call = ch.stream_stream(WATCH_PATH, request_serializer=WatchRequest.SerializeToString,
                            response_deserializer=WatchResponse.FromString)(gen(), timeout=seconds + 30)
    reqs.put(WatchRequest(create_request=WatchCreateRequest(key=prefix.encode(), range_end=end.encode(),
                                                            start_revision=start)))
    log = []  # ("progress", rev) | ("event", rev)
    errors = []
    done = threading.Event()

    def reader():
        try:
            for resp in call:
                if resp.watch_id == -1 and not resp.events and not resp.created:
                    log.append(("progress", resp.header.revision))
                elif resp.events:
                    for ev in resp.events:
                        log.append(("event", ev.kv.mod_revision))
                elif resp.canceled:
                    errors.append("watcher canceled: compact_revision=%d reason=%r" %
                                  (resp.compact_revision, resp.cancel_reason))
        except grpc.RpcError as e:
            if not done.is_set():
                errors.append("stream ended: %s" % e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = time.time() + seconds
    wrote_ready = False
    while time.time() < deadline:
        reqs.put(WatchRequest(progress_request=WatchProgressRequest()))
        time.sleep(0.2)
        if not wrote_ready and any(k == "progress" for k, _ in log):
            open(ready_file, "w").write("ready\n")
            wrote_ready = True
    done.set()
    reqs.put(None)
    call.cancel()
    t.join(5)

    expect = [int(x) for x in open(expect_file).read().split()]
    events = [r for k, r in log if k == "event"]
    progress = [r for k, r in log if k == "progress"]
    if events != expect:
        missing = sorted(set(expect) - set(events))
        errors.append("events: %d arrived, %d expected; missing %s; extra/duplicate %s" %
                      (len(events), len(expect), missing[:10], [r for r in events if r not in expect][:10]))
    floor = 0
    for k, r in log:
        if k == "progress":
            floor = max(floor, r)
        elif r <= floor:
            errors.append("event at rev %d after a progress response at rev %d" % (r, floor))
            break
    if not progress:
        errors.append("no progress response at all")
    elif expect and progress[-1] < expect[-1]:
        errors.append("the last progress response (rev %d) is below the last event (rev %d)" % (progress[-1], expect[-1]))
    print("events=%d progress_responses=%d first_progress=%s last_progress=%s" %
          (len(events), len(progress), progress[:1], progress[-1:]))
    for e in errors:
        print("FAIL:", e)
    sys.stdout.flush()
    os._exit(1 if errors else 0)


if __name__ == "__main__":
    main()
