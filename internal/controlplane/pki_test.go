package controlplane

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	certutil "k8s.io/client-go/util/cert"
)

func TestCAIsCreatedOnceAndKept(t *testing.T) {
	dir := t.TempDir()
	first, err := loadOrCreateCA(dir, "ca", "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	second, err := loadOrCreateCA(dir, "ca", "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if !first.Cert.Equal(second.Cert) {
		t.Fatal("a second load replaced the CA")
	}
	if info, err := os.Stat(filepath.Join(dir, "ca.key")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("ca.key mode = %v, %v; want 0600", info.Mode().Perm(), err)
	}
}

func TestIssuedCertificatesVerify(t *testing.T) {
	dir := t.TempDir()
	ca, err := loadOrCreateCA(dir, "ca", "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	certFile, _, err := ca.issue(dir, leaf{Name: "srv", CommonName: "srv", Server: true,
		DNSNames: []string{"kubernetes.default.svc"}, IPs: []net.IP{net.ParseIP("10.96.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := certutil.CertsFromFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"kubernetes.default.svc", "10.96.0.1"} {
		if _, err := srv[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("serving cert for %s: %v", host, err)
		}
	}
	if err := srv[0].VerifyHostname("evil.example"); err == nil {
		t.Error("serving cert verifies for a name it was not issued for")
	}

	certFile, _, err = ca.issue(dir, leaf{Name: "admin", CommonName: "admin", Organization: []string{"system:masters"}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	client, err := certutil.CertsFromFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert: %v", err)
	}
	if _, err := client[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client cert is accepted for serving")
	}
	if got := client[0].Subject.Organization; len(got) != 1 || got[0] != "system:masters" {
		t.Errorf("client organization = %v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{DataDir: "/tmp/x", BindAddress: net.ParseIP("127.0.0.1"), APIPort: 6443, ServiceCIDR: "10.96.0.0/16", ClusterCIDR: "10.244.0.0/16"}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"--data-dir":     func(c *Config) { c.DataDir = "" },
		"--api-port":     func(c *Config) { c.APIPort = 0 },
		"--service-cidr": func(c *Config) { c.ServiceCIDR = "10.96.0.0" },
		"--cluster-cidr": func(c *Config) { c.ClusterCIDR = "nope" },
		"--bind-address": func(c *Config) { c.BindAddress = nil },
	} {
		c := good
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v does not name the flag", name, err)
		}
	}
}

func TestFlagArgsAreSorted(t *testing.T) {
	got := flagArgs(map[string]string{"b": "2", "a": "1"})
	if len(got) != 2 || got[0] != "--a=1" || got[1] != "--b=2" {
		t.Errorf("flagArgs = %v", got)
	}
}

func TestEtcdSocketPathTooLong(t *testing.T) {
	long := filepath.Join("/tmp", strings.Repeat("d", 120))
	if _, err := newEtcd(long, filepath.Join(long, "run")); err == nil || !strings.Contains(err.Error(), "--data-dir") {
		t.Errorf("a data dir too long for a unix socket gave %v", err)
	}
}
