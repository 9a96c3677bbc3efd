// CoreDNS with the plugins the real node's cluster DNS uses (kubeadm's Corefile without
// forward: nothing upstream is reachable). Upstream's main imports every plugin of
// plugin.cfg (core/plugin); this one imports these only, so it builds in a fraction of the
// time, and its Corefile can use nothing else.
package main

import (
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
