package virtkube

import (
	"strings"
	"testing"
)

// Each bad flag is refused with an error naming it; the defaults plus the
// two certificate files are valid.
func TestCDIUploadProxyOptionsValidate(t *testing.T) {
	valid := func(o *cdiUploadProxyOptions) { o.CertFile, o.KeyFile = "/certs/tls.crt", "/certs/tls.key" }
	for _, tc := range []struct {
		name    string
		set     func(*cdiUploadProxyOptions)
		wantErr string // the flag the error names; empty: valid
	}{
		{name: "defaults with certificate", set: func(*cdiUploadProxyOptions) {}},
		{name: "host and port", set: func(o *cdiUploadProxyOptions) { o.Listen = "10.0.0.1:9443" }},
		{name: "published URL", set: func(o *cdiUploadProxyOptions) { o.UploadProxyURL = "https://node1:31001" }},
		{name: "no port", set: func(o *cdiUploadProxyOptions) { o.Listen = "8443" }, wantErr: "--listen"},
		{name: "port 0", set: func(o *cdiUploadProxyOptions) { o.Listen = ":0" }, wantErr: "--listen"},
		{name: "port out of range", set: func(o *cdiUploadProxyOptions) { o.Listen = ":70000" }, wantErr: "--listen"},
		{name: "no certificate", set: func(o *cdiUploadProxyOptions) { o.CertFile = "" }, wantErr: "--tls-cert-file"},
		{name: "no key", set: func(o *cdiUploadProxyOptions) { o.KeyFile = "" }, wantErr: "--tls-private-key-file"},
		{name: "empty namespace", set: func(o *cdiUploadProxyOptions) { o.TokenKeyNamespace = "" }, wantErr: "--token-key-namespace"},
		{name: "bad namespace", set: func(o *cdiUploadProxyOptions) { o.TokenKeyNamespace = "Kube_Virt" }, wantErr: "--token-key-namespace"},
		{name: "plain HTTP URL", set: func(o *cdiUploadProxyOptions) { o.UploadProxyURL = "http://node1:31001" }, wantErr: "--upload-proxy-url"},
		{name: "URL without host", set: func(o *cdiUploadProxyOptions) { o.UploadProxyURL = "node1:31001" }, wantErr: "--upload-proxy-url"},
		{name: "unparsable URL", set: func(o *cdiUploadProxyOptions) { o.UploadProxyURL = "https://node1:port" }, wantErr: "--upload-proxy-url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newCDIUploadProxyOptions()
			valid(o)
			tc.set(o)
			err := o.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !namesFlag(err, tc.wantErr)):
				t.Errorf("Validate: %v, want an error naming %s", err, tc.wantErr)
			}
		})
	}
}

// The command takes each flag the brief and deploy/cdi name and validates
// them before it connects anywhere: a renamed flag fails here and in
// deploy/cdi's manifest test.
func TestCDIUploadProxyFlags(t *testing.T) {
	cmd, _, err := NewCommand().Find([]string{"cdi-uploadproxy"})
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--listen=:9443", "--tls-cert-file=/c/tls.crt", "--tls-private-key-file=/c/tls.key",
		"--token-key-namespace=other", "--upload-proxy-url=https://n:31001", "--kubeconfig=/kc"}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	if err := cmd.PreRunE(cmd, nil); err != nil {
		t.Fatalf("PreRunE: %v", err)
	}
	for flag, want := range map[string]string{"listen": ":9443", "tls-cert-file": "/c/tls.crt", "tls-private-key-file": "/c/tls.key",
		"token-key-namespace": "other", "upload-proxy-url": "https://n:31001", "kubeconfig": "/kc"} {
		if got := cmd.Flags().Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	// Without the certificate the command stops before connecting.
	cmd, _, _ = NewCommand().Find([]string{"cdi-uploadproxy"})
	if err := cmd.PreRunE(cmd, nil); err == nil || !namesFlag(err, "--tls-cert-file") {
		t.Errorf("PreRunE without certificate: %v, want an error naming --tls-cert-file", err)
	}
}

// namesFlag tells whether err starts with flag, as "--flag value: ..." or
// "--flag: ...".
func namesFlag(err error, flag string) bool {
	return strings.HasPrefix(err.Error(), flag+" ") || strings.HasPrefix(err.Error(), flag+":")
}
