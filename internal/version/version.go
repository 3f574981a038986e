// Package version says which virtkube this is. The Makefile stamps Version
// and the Kubernetes version it embeds through -ldflags.
package version

import (
	"fmt"
	"runtime"
)

// Version is virtkube's own version.
var Version = "v0.1.0-dev"

// String is the one-line form `virtkube version` prints.
func String() string {
	return fmt.Sprintf("virtkube %s (%s, %s/%s)", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
