package virtctl

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestVirtctlLifecycleCommands(t *testing.T) {
	const vmPath = "/apis/subresources.kubevirt.io/v1/namespaces/testns/virtualmachines/testvm/"
	tests := []struct {
		name     string
		args     []string
		path     string
		wantBody map[string]any
		wantOut  string
	}{
		{"start", []string{"start", "testvm"}, vmPath + "start", map[string]any{}, "VM testvm was scheduled to start\n"},
		{"start paused", []string{"start", "testvm", "--paused"}, vmPath + "start",
			map[string]any{"paused": true}, "VM testvm was scheduled to start\n"},
		{"start dry run", []string{"start", "testvm", "--dry-run"}, vmPath + "start",
			map[string]any{"dryRun": []any{"All"}}, "Dry Run execution\nVM testvm was scheduled to start\n"},
		{"stop", []string{"stop", "testvm"}, vmPath + "stop", map[string]any{}, "VM testvm was scheduled to stop\n"},
		{"stop forced", []string{"stop", "testvm", "--force", "--grace-period", "0"}, vmPath + "stop",
			map[string]any{"gracePeriod": float64(0)}, "VM testvm was scheduled to stop\n"},
		{"restart", []string{"restart", "testvm"}, vmPath + "restart", map[string]any{}, "VM testvm was scheduled to restart\n"},
		{"restart forced", []string{"restart", "testvm", "--force", "--grace-period=0"}, vmPath + "restart",
			map[string]any{"gracePeriodSeconds": float64(0)}, "VM testvm was scheduled to restart\n"},
		{"migrate", []string{"migrate", "testvm", "--addedNodeSelector", "zone=a"}, vmPath + "migrate",
			map[string]any{"addedNodeSelector": map[string]any{"zone": "a"}}, "VM testvm was scheduled to migrate\n"},
		{"other namespace", []string{"start", "testvm", "-n", "other"},
			"/apis/subresources.kubevirt.io/v1/namespaces/other/virtualmachines/testvm/start", map[string]any{}, "VM testvm was scheduled to start\n"},
		{"pause vmi", []string{"pause", "vmi", "testvm"},
			"/apis/subresources.kubevirt.io/v1/namespaces/testns/virtualmachineinstances/testvm/pause", map[string]any{}, "VMI testvm was scheduled to pause\n"},
		{"unpause vmi", []string{"unpause", "VMI", "testvm"},
			"/apis/subresources.kubevirt.io/v1/namespaces/testns/virtualmachineinstances/testvm/unpause", map[string]any{}, "VMI testvm was scheduled to unpause\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFakeAPIServer(t)
			s.handle("PUT "+tt.path, func(w http.ResponseWriter, r *http.Request) {
				if ct := r.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
				w.WriteHeader(http.StatusAccepted)
			})
			res := s.run(context.Background(), nil, tt.args...)
			if res.err != nil {
				t.Fatalf("virtctl %v: %v", tt.args, res.err)
			}
			if res.stdout != tt.wantOut {
				t.Errorf("stdout = %q, want %q", res.stdout, tt.wantOut)
			}
			reqs := s.seen()
			if len(reqs) != 1 || reqs[0].Method != http.MethodPut || reqs[0].Path != tt.path {
				t.Fatalf("requests = %+v, want one PUT %s", reqs, tt.path)
			}
			var body map[string]any
			if err := json.Unmarshal([]byte(reqs[0].Body), &body); err != nil {
				t.Fatalf("body %q: %v", reqs[0].Body, err)
			}
			if !reflect.DeepEqual(body, tt.wantBody) {
				t.Errorf("body = %v, want %v", body, tt.wantBody)
			}
		})
	}
}

func TestVirtctlLifecycleErrors(t *testing.T) {
	s := newFakeAPIServer(t)
	s.handle("PUT /apis/subresources.kubevirt.io/v1/namespaces/testns/virtualmachines/testvm/start",
		func(w http.ResponseWriter, _ *http.Request) {
			writeStatus(w, http.StatusConflict, "Conflict", "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"testvm\": VM is already running")
		})
	res := s.run(context.Background(), nil, "start", "testvm")
	want := `Error starting VirtualMachine Operation cannot be fulfilled on virtualmachine.kubevirt.io "testvm": VM is already running`
	if res.err == nil || res.err.Error() != want {
		t.Errorf("error = %v, want %q", res.err, want)
	}
	if res.stdout != "" {
		t.Errorf("stdout = %q, want nothing", res.stdout)
	}

	res = s.run(context.Background(), nil, "migrate", "missing")
	if res.err == nil || !strings.HasPrefix(res.err.Error(), "Error migrating VirtualMachine ") {
		t.Errorf("migrate missing: error = %v", res.err)
	}

	res = s.run(context.Background(), nil, "stop", "testvm", "--force")
	if res.err != errForceWithGrace {
		t.Errorf("stop --force without --grace-period: error = %v", res.err)
	}
	if n := len(s.seen()); n != 2 {
		t.Errorf("%d requests, want 2 (the invalid stop must not reach the server)", n)
	}
}

func TestVirtctlPauseVM(t *testing.T) {
	s := newFakeAPIServer(t)
	s.handle("GET /apis/kubevirt.io/v1/namespaces/testns/virtualmachines/halted", writeJSON(map[string]any{
		"metadata": map[string]any{"name": "halted"}, "spec": map[string]any{"runStrategy": "Halted"},
	}))
	s.handle("GET /apis/kubevirt.io/v1/namespaces/testns/virtualmachines/running", writeJSON(map[string]any{
		"metadata": map[string]any{"name": "running"}, "spec": map[string]any{"runStrategy": "Always"},
	}))
	s.handle("PUT /apis/subresources.kubevirt.io/v1/namespaces/testns/virtualmachineinstances/running/pause",
		func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

	res := s.run(context.Background(), nil, "pause", "vm", "running")
	if res.err != nil || res.stdout != "VMI running was scheduled to pause\n" {
		t.Errorf("pause vm running: %q, %v", res.stdout, res.err)
	}
	res = s.run(context.Background(), nil, "pause", "vm", "halted")
	want := "Error pausing VirtualMachineInstance halted. VirtualMachine halted is not set to run"
	if res.err == nil || res.err.Error() != want {
		t.Errorf("pause vm halted: error = %v, want %q", res.err, want)
	}
	res = s.run(context.Background(), nil, "pause", "vm", "absent")
	if res.err == nil || res.err.Error() != "Error getting VirtualMachine absent: the server could not find the requested resource" {
		t.Errorf("pause vm absent: error = %v", res.err)
	}
	res = s.run(context.Background(), nil, "pause", "pod", "x")
	if res.err == nil || res.err.Error() != "unsupported resource type: pod" {
		t.Errorf("pause pod: error = %v", res.err)
	}
}

func TestVirtctlRejectsWrongCredentials(t *testing.T) {
	s := newFakeAPIServer(t)
	res := s.run(context.Background(), nil, "start", "testvm", "--token", "wrong")
	if res.err == nil || !strings.Contains(res.err.Error(), "Unauthorized") {
		t.Errorf("error = %v, want Unauthorized", res.err)
	}
}
