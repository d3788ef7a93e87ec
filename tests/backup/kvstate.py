#!/usr/bin/env python3
"""kvstate.py - the store as `etcdctl get "" --prefix -w json` shows it, in one comparable line.

    kvstate.py kvs  < get.json   -> [(key, value, create, mod, version, lease), ...] sorted by key
    kvstate.py rev  < get.json   -> header.revision
    kvstate.py leases < get.json -> the distinct non-zero lease IDs the keys are attached to, in hex (%016x)
                                    (as `etcdctl lease list` prints them), one per line

test_backup_pitr.sh records the store at a revision R during the run (get --rev R) and compares
it with what a member restored at R serves at its current revision: the same kvs line, and
header.revision R.
"""
import base64
import json
import sys


def main():
    mode = sys.argv[1]
    d = json.load(sys.stdin)
    kvs = d.get("kvs", [])
    if mode == "rev":
        print(d["header"]["revision"])
    elif mode == "kvs":
        rows = sorted(
            (
                base64.b64decode(k["key"]).decode("latin-1"),
                base64.b64decode(k.get("value", "")).decode("latin-1"),
                k["create_revision"],
                k["mod_revision"],
                k["version"],
                k.get("lease", 0),
            )
            for k in kvs
        )
        print(len(rows), rows)
    elif mode == "leases":
        for lid in sorted({k.get("lease", 0) for k in kvs} - {0}):
            print("%016x" % lid)
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
