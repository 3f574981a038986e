// Command container-disk runs in a containerDisk's container of a launcher
// pod and hands the image's disk to virt-launcher; see
// internal/containerdisk. It is built without cgo, so it runs in images
// that hold nothing but a disk.
package main

import (
	"os"

	"github.com/virtkube/virtkube/internal/containerdisk"
)

func main() { os.Exit(containerdisk.Main(os.Args[1:], os.Stderr)) }
