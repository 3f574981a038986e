package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cdideploy "github.com/virtkube/virtkube/deploy/cdi"
	"github.com/virtkube/virtkube/test/framework"
)

// `virtkube cdi-uploadproxy` on its own, as deploy/cdi runs it on a real
// cluster: beside virtkube server (whose own proxy is left alone), as the
// manifest's ServiceAccount with its RBAC only, serving the certificate it
// is given. virtctl image-upload through it fills a new DataVolume
// (progress shown while the data flows, then Succeeded at 100.0% with the
// file's bytes in its disk.img); a wrong token gets 401; the proxy was
// refused nothing, so the manifest's RBAC is enough; SIGTERM ends it
// cleanly.
func TestUploadProxyStandalone(t *testing.T) {
	s := shared
	c := cdiClient(t, s)

	// deploy/cdi's RBAC as a real cluster applies it, without the
	// Deployment (no image here) and without the Service: a NodePort
	// Service with no pods behind it shows nothing here, and its fixed
	// nodePort 31001 may collide with another on the shared server.
	rbac := withoutKind(t, []byte(withoutKind(t, cdideploy.UploadProxy, "Deployment")), "Service")
	kubectl(t, s, rbac, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, errOut, err := s.Kubectl(ctx, strings.NewReader(rbac), "delete", "--ignore-not-found", "-f", "-"); err != nil {
			t.Errorf("delete the proxy's RBAC: %v: %s", err, errOut)
		}
	})
	saKubeconfig := serviceAccountKubeconfig(t, s, "kubevirt", "cdi-uploadproxy")

	cert, key := selfSignedCert(t, t.TempDir(), net.IPv4(127, 0, 0, 1))
	proxy, url := startUploadProxy(t, saKubeconfig, cert, key)

	// A raw image of known bytes, uploaded through this proxy (not the one
	// CDIConfig names) into a new DataVolume.
	ns := s.Namespace(t)
	content := bytes.Repeat([]byte("uploadproxy-standalone "), (2<<20)/23) // ~2 MiB
	image := filepath.Join(t.TempDir(), "known.raw")
	if err := os.WriteFile(image, content, 0o644); err != nil {
		t.Fatal(err)
	}
	progress := watchProgress(t, s, c, ns, "up")
	stdout, stderr, code := virtctl(t, s, "virtctl", "image-upload", "dv", "up", "-n", ns, "--size", "64Mi",
		"--image-path", image, "--uploadproxy-url", url, "--insecure", "--wait-secs", "240")
	if code != 0 || !strings.Contains(stdout, "Processing completed successfully") || !strings.Contains(stdout, "100.00%") {
		t.Fatalf("virtctl image-upload through %s: exit %d\nstdout:\n%s\nstderr:\n%s\nproxy log:\n%s", url, code, stdout, stderr, proxy.Log())
	}
	// Only the proxy writes an upload's progress while it runs: a value
	// between 0% and 100% shows its DataVolume status patch was allowed.
	t.Logf("progress seen: %v", progress())
	disk := waitDataVolume(t, s, c, ns, "up")
	got, err := os.ReadFile(disk)
	if err != nil || len(got) != 64<<20 || !bytes.HasPrefix(got, content) {
		t.Errorf("uploaded disk.img: %d bytes (%v), starts with the image: %v; want 64 MiB starting with it", len(got), err, bytes.HasPrefix(got, content))
	}
	if log := proxy.Log(); !strings.Contains(log, "upload forwarded") || !strings.Contains(log, ns+"/up") {
		t.Errorf("the proxy's log does not show the upload to %s/up forwarded:\n%s", ns, log)
	}

	// A wrong token: refused as a bad token (not because the key could not
	// be read, which would also be 401).
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, _ := http.NewRequestWithContext(ctxT(t, time.Minute), http.MethodPost, url+"/v1beta1/upload", strings.NewReader("data"))
	req.Header.Set("Authorization", "Bearer not-a-token")
	resp, err := insecure.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "invalid upload token") {
		t.Errorf("upload with a wrong token: %s %q, want 401 invalid upload token", resp.Status, body)
	}

	// SIGTERM, as a Deployment's pod is stopped: a clean exit, and nothing
	// in the log (at -v=1, where refused progress writes and refused
	// uploads show) was forbidden.
	if err := proxy.Stop(30 * time.Second); err != nil {
		t.Errorf("cdi-uploadproxy on SIGTERM: %v\n%s", err, proxy.Log())
	}
	if log := proxy.Log(); strings.Contains(strings.ToLower(log), "forbidden") {
		t.Errorf("the ServiceAccount's upload proxy was refused something:\n%s", log)
	}
}

// selfSignedCert writes a self-signed serving certificate for ip and its
// key into dir and returns their paths.
func selfSignedCert(t *testing.T, dir string, ip net.IP) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: ip.String()},
		IPAddresses:           []net.IP{ip},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// startUploadProxy runs `virtkube cdi-uploadproxy` with kubeconfig on a free
// port of 127.0.0.1, serving certFile, and waits until its /healthz
// answers 200 with that certificate. It returns the process and the
// proxy's https URL.
func startUploadProxy(t *testing.T, kubeconfig, certFile, keyFile string) (*framework.Process, string) {
	t.Helper()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// No --upload-proxy-url: CDIConfig keeps naming virtkube server's
	// own proxy.
	cmd := exec.Command(mustBinary(t), "cdi-uploadproxy", "--kubeconfig", kubeconfig, "--listen", listen,
		"--tls-cert-file", certFile, "--tls-private-key-file", keyFile, "-v=1")
	url := "https://" + listen
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	p := startProcess(t, "cdi-uploadproxy", cmd, func(ctx context.Context) (bool, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil)
		resp, err := insecure.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || !bytes.Equal(resp.TLS.PeerCertificates[0].Raw, pair.Certificate[0]) {
			return false, "/healthz: served with another certificate than --tls-cert-file's"
		}
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("/healthz: %s", resp.Status)
	})
	return p, url
}
