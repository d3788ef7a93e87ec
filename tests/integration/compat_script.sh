# The etcdctl script run against both etcd and Cairn by test_compat.sh. One command per line;
# each command's stdout+stderr and exit code are recorded. $EP is the endpoint.
put foo bar
put foo2 bar2
put foo3 bar3
put zoo zebra
put a/1 one
put a/2 two
put a/3 three
get foo
get foo -w json
get foo --print-value-only
get foo --keys-only
get foo --prefix
get foo --prefix --limit 2
get foo --prefix --limit 2 -w json
get foo --prefix --sort-by=VALUE --order=DESCEND
get foo --prefix --sort-by=CREATE --order=ASCEND
get foo --prefix --sort-by=MODIFY
get foo --prefix --sort-by=VERSION --order=DESCEND
get foo --prefix --order=DESCEND
get a/ --prefix -w fields
get a/1 a/3
get --from-key foo2
get --from-key "" --keys-only
get foo --rev=2
get foo --rev=3
get foo --rev=1000
get nothing
get nothing -w json
put foo barbar --prev-kv
put foo barbaz --prev-kv -w json
get foo -w json
del nothing
del foo2 --prev-kv
del a/ --prefix
del a/ --prefix
get "" --prefix --keys-only
put k1 v1
put k2 v2
txn-i compare-mod-ok
txn-i compare-value-fail
txn-i compare-version
txn-i compare-create
get k1 --print-value-only
get k2 --print-value-only
watch-hist foo --rev=1
watch-hist foo --prefix --rev=1 --prev-kv
watch-hist "" --prefix --rev=1 -w json
watch-hist k1 --rev=1 --prev-kv -w json
watch-hist a/ --prefix --rev=5 --prev-kv
watch-hist --rev=1 k1 k3
compaction 3
watch-hist foo --rev=2
watch-hist "" --prefix --rev=3 --prev-kv
get foo --rev=2
compaction 2
compaction 100000
put "" empty
get ""
del ""
put bigkey --ignore-value
put foo --ignore-value
get foo --print-value-only
put foo newval --lease=1234
lease grant 1
lease grant 100 -w json
lease list
lease timetolive 1234
lease timetolive 1234 -w json
lease revoke 1234
lease keep-alive --once 1234
member-list-count
endpoint-health
get "" --prefix -w json
