#!/usr/bin/python3
"""ackcheck.py HISTORY.jsonl EVENTS.jsonl - no acknowledged write lost, none invented.

HISTORY: client.py's history (tests/linearizability). EVENTS: every event of the workload's
prefix from revision 1, one JSON object a line {"rev", "type", "key", "value"} (nemesis.py
dumps it with a watch after the run). Written values are unique, so each can be traced:
  lost      an ok write / ok CAS whose value is in no PUT event of its key
  phantom   a PUT event whose value no write or CAS of the history issued, or that only a CAS
            answered FAILURE carried (a failed CAS must not have written)
  twice     a value put more than once (a proposal applied twice)
  reorder   events whose revisions go backwards
Exit status 0 when none, 1 otherwise (the first few of each kind are printed), 2 bad input.
"""
import json
import sys


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    hist = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    evs = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
    keys = {d["key"] for d in hist}
    acked, issued, failed_cas = {}, {}, {}
    for d in hist:
        if d["f"] == "write":
            v = d["value"]
        elif d["f"] == "cas":
            v = d["new"]
        else:
            continue
        issued[v] = d
        if d["type"] == "ok":
            acked[v] = d
        elif d["type"] == "fail":
            failed_cas[v] = d
    seen = {}
    bad = {"lost": [], "phantom": [], "twice": [], "reorder": []}
    last = 0
    for e in evs:
        if e["rev"] < last:
            bad["reorder"].append(e)
        last = e["rev"]
        if e["key"] not in keys or e["type"] != "PutEvent":
            continue
        v = e["value"]
        if v in seen:
            bad["twice"].append(e)
        seen[v] = e
        if v not in issued or v in failed_cas or issued[v]["key"] != e["key"]:
            bad["phantom"].append(e)
    for v, d in acked.items():
        if v not in seen:
            bad["lost"].append(d)
    print("acked=%d issued=%d put_events=%d lost=%d phantom=%d twice=%d reorder=%d" % (
        len(acked), len(issued), len(seen), len(bad["lost"]), len(bad["phantom"]), len(bad["twice"]),
        len(bad["reorder"])))
    for k, lst in bad.items():
        for x in lst[:5]:
            print("%s: %s" % (k, json.dumps(x)))
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
