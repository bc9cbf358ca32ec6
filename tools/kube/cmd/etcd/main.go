// Command etcd is the etcd server at the version the pinned Kubernetes release
// is built against (go.etcd.io/etcd/server/v3), so no distribution package or
// download is needed for the local control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
