// The sandbox ("pause") process of every pod on the local node: it holds the pod's namespaces,
// reaps the zombies of containers that share its PID namespace, and exits on SIGTERM/SIGINT.
// No registry is reachable here, so hack/build-node.sh builds it and
// modeldeploy/cluster/images.py packs it into a one-layer OCI image for containerd.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
