// Command crdgen writes deploy/crds from kubevirt.io/api and CDI's API
// (kubevirt.io/containerized-data-importer-api). Run it with
// `make generate`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/virtkube/virtkube/internal/crdgen"
)

func main() {
	out := flag.String("out", "deploy/crds", "directory to write the CRD manifests to")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "crdgen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	defs, err := crdgen.Generate()
	if err != nil {
		return err
	}
	cdi, err := crdgen.GenerateCDI()
	if err != nil {
		return err
	}
	defs = append(defs, cdi...)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, def := range defs {
		body, err := crdgen.Marshal(def)
		if err != nil {
			return err
		}
		path := filepath.Join(out, crdgen.FileName(def))
		if err := os.WriteFile(path, body, 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", path, len(body), "bytes")
	}
	return nil
}
