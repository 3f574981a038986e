// Command push-containerdisk packs a disk image as a KubeVirt containerDisk
// (the disk under /disk/) and pushes it to a registry on loopback. The demo
// (hack/demo.sh) uses it to serve the test guest.
//
//	go run ./hack/push-containerdisk -registry 127.0.0.1:5000 -repo virtkube/test-guest -tag latest DISK
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/virtkube/virtkube/test/containerdisk"
)

func main() {
	registry := flag.String("registry", "127.0.0.1:5000", "registry host:port (plain HTTP, loopback)")
	repo := flag.String("repo", "virtkube/test-guest", "repository")
	tag := flag.String("tag", "latest", "tag")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: push-containerdisk [-registry host:port] [-repo r] [-tag t] DISK")
		os.Exit(2)
	}
	ref, err := containerdisk.Push(context.Background(), *registry, *repo, *tag, flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "push-containerdisk:", err)
		os.Exit(1)
	}
	fmt.Println(ref)
}
