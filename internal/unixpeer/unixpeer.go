// Package unixpeer tells which process is at the other end of a unix
// socket. virt-handler finds a launcher's network namespace this way and
// virt-launcher a containerDisk's root; both need the pid as the kernel
// translates it into their own pid namespace.
package unixpeer

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// PID is the process at the other end of conn (SO_PEERCRED), in this
// process's pid namespace; 0 when that process is in a pid namespace this
// one cannot see.
func PID(conn net.Conn) (int, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return 0, errors.New("not a unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return int(cred.Pid), nil
}
