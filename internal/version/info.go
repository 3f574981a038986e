package version

import (
	"fmt"
	"runtime"
)

// Build facts stamped by the Makefile.
var (
	GitCommit    = ""
	GitTreeState = ""
	BuildDate    = ""
)

// Info has the fields and JSON names of KubeVirt's version.Info, which
// virtctl prints and virt-api serves at subresources.kubevirt.io/v1/version.
type Info struct {
	GitVersion   string `json:"gitVersion"`
	GitCommit    string `json:"gitCommit"`
	GitTreeState string `json:"gitTreeState"`
	BuildDate    string `json:"buildDate"`
	GoVersion    string `json:"goVersion"`
	Compiler     string `json:"compiler"`
	Platform     string `json:"platform"`
}

// Get returns this binary's Info.
func Get() Info {
	return Info{
		GitVersion:   Version,
		GitCommit:    GitCommit,
		GitTreeState: GitTreeState,
		BuildDate:    BuildDate,
		GoVersion:    runtime.Version(),
		Compiler:     runtime.Compiler,
		Platform:     runtime.GOOS + "/" + runtime.GOARCH,
	}
}

// GoString prints Info as KubeVirt's virtctl does (a %#v of its struct).
func (i Info) GoString() string {
	return fmt.Sprintf("version.Info{GitVersion:%q, GitCommit:%q, GitTreeState:%q, BuildDate:%q, GoVersion:%q, Compiler:%q, Platform:%q}",
		i.GitVersion, i.GitCommit, i.GitTreeState, i.BuildDate, i.GoVersion, i.Compiler, i.Platform)
}
