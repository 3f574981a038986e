package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"

	"github.com/virtkube/virtkube/internal/atomicfile"
)

// leafLifetime is how long issued certificates last. CAs last ten years
// (client-go's default). Leaf certificates are re-issued on every
// start from the persistent CAs, so they never need renewing in place.
const leafLifetime = 365 * 24 * time.Hour

// authority is a CA whose key and certificate live under the data dir.
type authority struct {
	Cert     *x509.Certificate
	Key      crypto.Signer
	CertFile string
}

// loadOrCreateCA returns the CA stored as <dir>/<name>.{crt,key}, creating it
// on first use. An existing CA is never replaced: every kubeconfig and
// service-account token handed out depends on it.
func loadOrCreateCA(dir, name, commonName string) (*authority, error) {
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if certs, err := certutil.CertsFromFile(certFile); err == nil {
		key, err := keyutil.PrivateKeyFromFile(keyFile)
		if err != nil {
			return nil, fmt.Errorf("read CA key %s: %w", keyFile, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("CA key %s cannot sign", keyFile)
		}
		return &authority{Cert: certs[0], Key: signer, CertFile: certFile}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read CA %s: %w", certFile, err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: commonName}, key)
	if err != nil {
		return nil, fmt.Errorf("create CA %s: %w", name, err)
	}
	// NewSelfSignedCACert uses a 10 year lifetime; keep that.
	if err := writeKey(keyFile, key); err != nil {
		return nil, err
	}
	if err := writeCert(certFile, cert); err != nil {
		return nil, err
	}
	return &authority{Cert: cert, Key: key, CertFile: certFile}, nil
}

// leaf describes a certificate to issue.
type leaf struct {
	Name         string // file stem under the pki dir
	CommonName   string
	Organization []string
	Client       bool
	Server       bool
	DNSNames     []string
	IPs          []net.IP
}

// issue signs a fresh key pair for l and writes <dir>/<name>.{crt,key}.
func (ca *authority) issue(dir string, l leaf) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: l.CommonName, Organization: l.Organization},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
	}
	if l.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return "", "", fmt.Errorf("sign %s: %w", l.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, l.Name+".crt"), filepath.Join(dir, l.Name+".key")
	if err := writeKey(keyFile, key); err != nil {
		return "", "", err
	}
	if err := writeCert(certFile, cert); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// loadOrCreateServiceAccountKey returns the path of the key that signs
// service-account tokens. Like the CAs it is created once and kept.
func loadOrCreateServiceAccountKey(dir string) (string, error) {
	path := filepath.Join(dir, "service-account.key")
	if _, err := keyutil.PrivateKeyFromFile(path); err == nil {
		return path, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read service-account key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	return path, writeKey(path, key)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, der, 0o600)
}

func writeCert(path string, cert *x509.Certificate) error {
	pem, err := certutil.EncodeCertificates(cert)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, pem, 0o644)
}
