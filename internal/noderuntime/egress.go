package noderuntime

import (
	"errors"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// egressTable is the nftables table of the node's pod network: one per
// bridge, so servers with different bridges on one machine keep apart.
func egressTable(bridge string) string { return "virtkube-" + bridge }

// ensureEgressNAT lets pods reach beyond this machine: their traffic to
// anywhere outside podCIDR that leaves through another link than the bridge
// is masqueraded behind the node's address. The table is rewritten as a
// whole, in one transaction.
func ensureEgressNAT(bridge string, podCIDR *net.IPNet) error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: egressTable(bridge)}
	conn.AddTable(table)
	conn.FlushTable(table)
	chain := conn.AddChain(&nftables.Chain{
		Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, bridge)
	inCIDR := func(offset uint32, op expr.CmpOp) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: podCIDR.Mask, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: op, Register: 1, Data: podCIDR.IP.To4()},
		}
	}
	var exprs []expr.Any
	exprs = append(exprs, inCIDR(12, expr.CmpOpEq)...)  // from a pod
	exprs = append(exprs, inCIDR(16, expr.CmpOpNeq)...) // to elsewhere
	exprs = append(exprs,
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname}, // not back to the bridge
		&expr.Counter{},
		&expr.Masq{},
	)
	conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: exprs})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", table.Name, err)
	}
	return nil
}

// RemoveBridge removes a node's bridge and its egress table, for a node
// that is gone for good (tests make nodes of their own).
func RemoveBridge(name string) error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	conn.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: egressTable(name)})
	if err := conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables table %s: %w", egressTable(name), err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil
	}
	return netlink.LinkDel(link)
}
