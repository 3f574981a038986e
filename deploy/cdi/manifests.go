// Package cdi carries the manifests of CDI's parts a real cluster runs on
// their own, as it applies them from this directory: the upload proxy
// (`virtkube cdi-uploadproxy`) behind a NodePort Service. virtkube server
// runs its own upload proxy and installs none of these.
package cdi

import _ "embed"

// UploadProxy is uploadproxy.yaml, several YAML documents in namespace
// kubevirt: the ServiceAccount cdi-uploadproxy and its RBAC, the Service
// cdi-uploadproxy (NodePort 31001 to the proxy's HTTPS port 8443) and the
// Deployment running `virtkube cdi-uploadproxy`.
//
//go:embed uploadproxy.yaml
var UploadProxy []byte
