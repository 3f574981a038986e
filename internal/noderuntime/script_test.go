package noderuntime

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestContainerScriptText(t *testing.T) {
	tests := []struct {
		name   string
		mounts []bindMount
		want   []string // lines, in this order
		not    []string
	}{
		{
			name: "no mounts",
			want: []string{
				"mount --make-rprivate / || fail 'mount --make-rprivate /'",
				"umount -l /run/netns 2>/dev/null",
				`"$0" "$@" &`,
				`echo "$rc" >'/p/c.exit.tmp' && mv -f '/p/c.exit.tmp' '/p/c.exit'`,
			},
			not: []string{"mount --bind"},
		},
		{
			name: "volumes in order, read-only remounted",
			mounts: []bindMount{
				{Source: "/root/pods/u/volumes/kubernetes.io~empty-dir/sockets", Target: "/var/run/kubevirt/sockets"},
				{Source: "/src/ro", Target: "/ro", ReadOnly: true},
			},
			want: []string{
				"mount --make-rprivate /",
				"mkdir -p '/var/run/kubevirt/sockets' || fail 'mkdir /var/run/kubevirt/sockets'",
				"mount --bind '/root/pods/u/volumes/kubernetes.io~empty-dir/sockets' '/var/run/kubevirt/sockets' || fail 'mount /var/run/kubevirt/sockets'",
				"mount --bind '/src/ro' '/ro'",
				"mount -o remount,bind,ro '/ro'",
				`"$0" "$@" &`,
			},
		},
		{
			name:   "quotes in paths",
			mounts: []bindMount{{Source: "/it's", Target: "/a b"}},
			want:   []string{`mount --bind '/it'\''s' '/a b'`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := containerScript(tt.mounts, nil, nil, "/p/c.exit")
			rest := got
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("script lacks %q (in order):\n%s", w, got)
				}
				rest = rest[i+len(w):]
			}
			for _, n := range tt.not {
				if strings.Contains(got, n) {
					t.Errorf("script has %q:\n%s", n, got)
				}
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"": "''", "a b": "'a b'", "it's": `'it'\''s'`, "$x`y`": "'$x`y`'"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
		out, err := exec.Command("/bin/sh", "-c", "printf %s "+shellQuote(in)).Output()
		if err != nil || string(out) != in {
			t.Errorf("sh reads %s as %q (%v)", shellQuote(in), out, err)
		}
	}
}

func TestParseExitRecord(t *testing.T) {
	tests := []struct {
		in   string
		want exitRecord
		bad  bool
	}{
		{"0\n", exitRecord{Code: 0}, false},
		{"143\n", exitRecord{Code: 143}, false},
		{"128 StartError\n", exitRecord{Code: 128, Reason: "StartError"}, false},
		{"", exitRecord{}, true},
		{"x", exitRecord{}, true},
	}
	for _, tt := range tests {
		got, err := parseExitRecord(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("parseExitRecord(%q) = %+v, %v", tt.in, got, err)
		}
	}
}

// The script really runs: as root it binds a volume in a mount namespace
// of its own (the host sees nothing), forwards SIGTERM to the command and
// records how the command ended.
func TestContainerScriptRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount namespaces")
	}
	dir := t.TempDir()
	vol := filepath.Join(dir, "vol")
	target := filepath.Join(dir, "target")
	if err := os.MkdirAll(vol, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "hello"), []byte("hi"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, mounts []bindMount, shell string) (*exec.Cmd, string) {
		exitFile := filepath.Join(t.TempDir(), "c.exit")
		cmd := exec.Command("/bin/sh", "-c", containerScript(mounts, nil, nil, exitFile), "/bin/sh", "-c", shell)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Unshareflags: syscall.CLONE_NEWNS}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		return cmd, exitFile
	}
	readExit := func(t *testing.T, path string) exitRecord {
		body, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := parseExitRecord(string(body))
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}

	t.Run("volume visible inside only; exit code recorded", func(t *testing.T) {
		cmd, exitFile := run(t, []bindMount{{Source: vol, Target: target}}, `test "$(cat `+target+`/hello)" = hi && exit 7`)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
			t.Fatalf("wait = %v, want exit 7", err)
		}
		if rec := readExit(t, exitFile); rec.Code != 7 {
			t.Errorf("exit record %+v", rec)
		}
		if _, err := os.Stat(filepath.Join(target, "hello")); err == nil {
			t.Error("the bind mount leaked to the host")
		}
	})
	t.Run("SIGTERM reaches the command, which decides how to end", func(t *testing.T) {
		ready := filepath.Join(t.TempDir(), "ready")
		cmd, exitFile := run(t, nil, `trap 'exit 3' TERM; touch `+ready+`; while :; do sleep 0.05; done`)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(ready); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("command did not start")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
				t.Fatalf("wait = %v, want exit 3", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("SIGTERM was not forwarded")
		}
		if rec := readExit(t, exitFile); rec.Code != 3 {
			t.Errorf("exit record %+v", rec)
		}
	})
	t.Run("a mount that fails is a start error", func(t *testing.T) {
		cmd, exitFile := run(t, []bindMount{{Source: filepath.Join(dir, "missing"), Target: target}}, "exit 0")
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitStartError {
			t.Fatalf("wait = %v, want exit %d", err, exitStartError)
		}
		if rec := readExit(t, exitFile); rec != (exitRecord{Code: exitStartError, Reason: ReasonStartError}) {
			t.Errorf("exit record %+v", rec)
		}
	})
}
