package handler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/launcherrpc"
	"github.com/virtkube/virtkube/internal/network"
)

// Port forwarding reaches a port of a guest for virt-api, which proxies the
// user's websocket here once RBAC allowed virtualmachineinstances/portforward.
// KubeVirt's virt-api dials the VMI's address itself; virtkube dials from
// the VMI's node instead, because a masquerade guest (10.0.2.2) can only be
// reached from inside its launcher pod.

// guestDialTimeout bounds connecting to the guest: a guest that does not
// answer should fail the request before the websocket is upgraded.
const guestDialTimeout = 10 * time.Second

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// errNoInterface is KubeVirt's refusal for a VMI without a pod network.
var errNoInterface = errors.New("no network interfaces are present")

// forwardedPort is the port and protocol of a port-forward request.
type forwardedPort struct {
	port     int
	protocol string
}

// parseForwardedPort reads the {port} and {protocol} of a request path.
func parseForwardedPort(port, protocol string) (forwardedPort, error) {
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return forwardedPort{}, fmt.Errorf("port %q: must be a number from 1 to 65535", port)
	}
	if protocol != "tcp" && protocol != "udp" {
		return forwardedPort{}, fmt.Errorf("protocol %q: must be tcp or udp", protocol)
	}
	return forwardedPort{port: n, protocol: protocol}, nil
}

// guestAddress is where a guest's ports are reached: its IP, dialed from the
// network namespace at netns, or from this process's own when netns is "".
type guestAddress struct {
	netns string
	ip    string
}

// guestAddressOf reads what phase 1 of the pod network decided for v's
// interface (cached in the sockets directory dir): a bridge guest has the
// pod's IP, which the node routes to; a masquerade guest sits on the pod's
// private network, reached from inside the launcher's namespace.
func guestAddressOf(ctx context.Context, v *virtv1.VirtualMachineInstance, dir string) (guestAddress, error) {
	iface, _ := podInterface(v)
	if iface == nil {
		return guestAddress{}, errNoInterface
	}
	c, err := network.ReadConfig(network.CacheDir(dir), iface.Name)
	if err != nil {
		return guestAddress{}, fmt.Errorf("pod network of interface %s: %w", iface.Name, err)
	}
	ip, _, err := net.ParseCIDR(c.GuestIP)
	if err != nil {
		return guestAddress{}, fmt.Errorf("guest IP %q: %w", c.GuestIP, err)
	}
	a := guestAddress{ip: ip.String()}
	if c.Binding == network.BindingMasquerade {
		if a.netns, err = launcherNetns(ctx, filepath.Join(dir, launcherrpc.SocketName)); err != nil {
			return guestAddress{}, err
		}
	}
	return a, nil
}

func (a guestAddress) dial(ctx context.Context, p forwardedPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, guestDialTimeout)
	defer cancel()
	addr := net.JoinHostPort(a.ip, strconv.Itoa(p.port))
	if a.netns == "" {
		return (&net.Dialer{}).DialContext(ctx, p.protocol, addr)
	}
	return network.DialInNetns(ctx, a.netns, p.protocol, addr)
}

// portForward connects to a port of a guest running on this node and relays
// it over a websocket: a TCP stream as binary messages, UDP one datagram per
// message. Every refusal comes before the upgrade: 400 for a bad port or a
// VMI not running here, 404 for an unknown VMI, 503 while its network is not
// set up, and KubeVirt's 500 "dialing VM: ..." when the guest does not accept
// the connection.
func (s *ConsoleServer) portForward(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	p, err := parseForwardedPort(r.PathValue("port"), r.PathValue("protocol"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	v := &virtv1.VirtualMachineInstance{}
	if err := s.Client.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: name}, v); err != nil {
		http.Error(w, fmt.Sprintf("VMI %s/%s: %v", ns, name, err), http.StatusNotFound)
		return
	}
	dir := s.socketsDir(v)
	if v.Status.NodeName != s.NodeName || v.Status.Phase != virtv1.Running || dir == "" {
		http.Error(w, fmt.Sprintf("VMI %s/%s is not running on node %s", ns, name, s.NodeName), http.StatusBadRequest)
		return
	}
	guest, err := guestAddressOf(r.Context(), v, dir)
	switch {
	case errors.Is(err, errNoInterface):
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case err != nil:
		http.Error(w, fmt.Sprintf("VMI %s/%s: %v", ns, name, err), http.StatusServiceUnavailable)
		return
	}
	conn, err := guest.dial(r.Context(), p)
	if err != nil {
		http.Error(w, fmt.Sprintf("dialing VM: %v", err), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the client
	}
	defer ws.Close()
	log := klog.FromContext(r.Context()).WithValues("vmi", klog.KObj(v), "port", p.port, "protocol", p.protocol)
	log.V(2).Info("port forward opened", "guest", guest.ip)
	relay := Splice
	if p.protocol == "udp" {
		relay = spliceDatagrams
	}
	if err := relay(ws, conn); err != nil && !isClosed(err) {
		log.V(2).Info("port forward closed", "err", err)
	}
}

// spliceDatagrams relays between a websocket and a connected UDP socket
// until either side ends: each binary message is sent as one datagram and
// each datagram received becomes one message, so boundaries survive (Splice
// would merge or split them).
func spliceDatagrams(ws *websocket.Conn, conn net.Conn) error {
	errs := make(chan error, 2)
	go func() {
		buf := make([]byte, maxDatagram)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				errs <- err
				return
			}
			if err := ws.WriteMessage(websocket.BinaryMessage, buf[:n]); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		for {
			typ, msg, err := ws.ReadMessage()
			if err != nil {
				errs <- err
				return
			}
			if typ != websocket.BinaryMessage {
				continue
			}
			if _, err := conn.Write(msg); err != nil {
				errs <- err
				return
			}
		}
	}()
	err := <-errs
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return err
}
