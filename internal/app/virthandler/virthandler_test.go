package virthandler

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDialAddress(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "n1"},
			{Type: corev1.NodeInternalIP, Address: "192.0.2.10"},
		}},
	}
	v6 := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "2001:db8::10"}}}}
	bare := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare"}}
	for _, tc := range []struct {
		listen  string
		node    *corev1.Node
		want    string
		wantErr string
	}{
		{":8186", node, "192.0.2.10:8186", ""},
		{"0.0.0.0:8186", node, "192.0.2.10:8186", ""},
		{"[::]:8186", v6, "[2001:db8::10]:8186", ""},
		{"127.0.0.1:18186", node, "127.0.0.1:18186", ""},
		{"198.51.100.7:8186", bare, "198.51.100.7:8186", ""},
		{"node1.example:8186", bare, "node1.example:8186", ""},
		{":8186", bare, "", "node bare has no InternalIP"},
		{"8186", node, "", "--console-address"},
	} {
		got, err := dialAddress(tc.listen, tc.node)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("dialAddress(%q) = %q, %v; want error %q", tc.listen, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("dialAddress(%q) = %q, %v; want %q", tc.listen, got, err, tc.want)
		}
	}
}
