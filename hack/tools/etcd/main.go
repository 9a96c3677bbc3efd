// Command etcd is the pinned etcd server used by the local test cluster (hack/cluster.py).
//
// etcd's own cmd module cannot be built with go install (it has replace directives), so this
// wrapper module requires go.etcd.io/etcd/server/v3 and calls its entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
