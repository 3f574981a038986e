package importer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeToken makes a token file.
func writeToken(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// send makes one request with a bearer token and returns its status and
// body.
func send(t *testing.T, method, url, token string, body []byte) (int, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The upload server refuses a wrong token and a second upload while one
// runs, answers a cut-off upload 400 and keeps nothing of it, then takes a
// good one and ends.
func TestUpload(t *testing.T) {
	needQemuImg(t)
	dest := t.TempDir()
	p := start(t, "--mode=upload", "--token-file="+writeToken(t, "s3cret\n"), "--dest="+dest, "--size=1048576", "--owner-uid=dv")
	url := "http://" + p.addr + "/v1beta1/upload"
	content := bytes.Repeat([]byte("upload"), 1<<14)

	if code, _ := send(t, http.MethodPost, url, "wrong", content); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", code)
	}
	if code, _ := send(t, http.MethodPost, url, "", content); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, _ := send(t, http.MethodGet, url, "s3cret", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", code)
	}
	if code, _ := send(t, http.MethodGet, "http://"+p.addr+"/healthz", "", nil); code != http.StatusOK {
		t.Errorf("/healthz: %d, want 200", code)
	}

	// An upload that says it is longer than what it sends.
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /v1alpha1/upload-async HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: %d\r\n\r\n", len(content)+4096)
	if _, err := conn.Write(content); err != nil {
		t.Fatal(err)
	}
	// While it runs, another is refused (an empty probe: it fails before
	// anything is written if the slot is free).
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := send(t, http.MethodPut, url, "s3cret", nil)
		if code == http.StatusConflict {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second upload while one runs: %d %s, want 409", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("answer to the cut-off upload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(string(body), "upload failed: ") {
		t.Errorf("cut-off upload: %s %q, want 400 upload failed: ...", resp.Status, body)
	}
	noDisk(t, dest)

	if code, body := send(t, http.MethodPost, url, "s3cret", content); code != http.StatusOK {
		t.Fatalf("good upload: %d %s, want 200", code, body)
	}
	if r := p.wait(t); r.code != 0 {
		t.Fatalf("exit %d after the upload: %s", r.code, r.stderr)
	}
	if got := readDisk(t, dest); len(got) != 1<<20 || !bytes.Equal(got[:len(content)], content) {
		t.Errorf("disk.img (%d bytes) is not the upload grown to 1 MiB", len(got))
	}
}

// A claim that holds its upload already ends the server at once.
func TestUploadAlreadyDone(t *testing.T) {
	dest := t.TempDir()
	if err := os.WriteFile(filepath.Join(dest, "disk.img"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runMain(t, "--mode=upload", "--token-file=/nonexistent", "--dest="+dest, "--size=1048576")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := readDisk(t, dest); string(got) != "kept" {
		t.Errorf("disk.img changed to %d bytes", len(got))
	}
}

// An upload into a block claim: a cut-off one leaves the device untouched
// and the server serving; a good one lands on the device and ends it.
func TestUploadDevice(t *testing.T) {
	needQemuImg(t)
	const size = 4 << 20
	device, scratch := deviceFile(t, size), t.TempDir()
	p := start(t, "--mode=upload", "--token-file="+writeToken(t, "tok"), "--dest-device="+device, "--scratch="+scratch, "--size=1048576")
	url := "http://" + p.addr + "/v1beta1/upload"
	content := bytes.Repeat([]byte("block"), 1<<15)

	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /v1beta1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\nContent-Length: %d\r\n\r\n", len(content)+4096)
	if _, err := conn.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("answer to the cut-off upload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(string(body), "upload failed: ") {
		t.Errorf("cut-off upload: %s %q, want 400 upload failed: ...", resp.Status, body)
	}
	deviceHolds(t, device, size, nil)

	if code, body := send(t, http.MethodPost, url, "tok", content); code != http.StatusOK {
		t.Fatalf("good upload: %d %s, want 200", code, body)
	}
	if r := p.wait(t); r.code != 0 {
		t.Fatalf("exit %d after the upload: %s", r.code, r.stderr)
	}
	deviceHolds(t, device, size, content)
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch keeps %d entries after the upload", len(left))
	}
}
