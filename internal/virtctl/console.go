package virtctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/gorilla/websocket"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/client-go/tools/clientcmd"
)

// escapeByte is Ctrl+], the byte that ends a console session, as in telnet.
const escapeByte = 0x1d

// consoleRetryInterval is how often console asks again while virt-api
// answers 400 (the VMI exists but is not running yet).
var consoleRetryInterval = time.Second

func newConsoleCommand(cc clientcmd.ClientConfig) *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "console (VMI)",
		Short: "Connect to a console of a virtual machine instance.",
		Example: `  # Connect to the console on VirtualMachineInstance 'myvmi':
  virtctl console myvmi
  # Configure one minute timeout (default 5 minutes)
  virtctl console --timeout=1 myvmi`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cc)
			if err != nil {
				return fmt.Errorf("cannot obtain KubeVirt client: %v", err)
			}
			return runConsole(cmd, c, args[0], time.Duration(timeout)*time.Minute)
		},
	}
	cmd.Flags().IntVar(&timeout, "timeout", 5, "The number of minutes to wait for the virtual machine instance to be ready.")
	return cmd
}

// runConsole attaches the terminal to the VMI's serial console until the
// user types the escape byte, stdin ends, or the server closes the stream.
func runConsole(cmd *cobra.Command, c *client, name string, timeout time.Duration) error {
	ctx := cmd.Context()
	conn, err := dialConsole(ctx, c, name, timeout)
	if errors.Is(err, context.Canceled) {
		// Interrupted while waiting: leave the prompt on a fresh line.
		fmt.Fprintln(cmd.OutOrStdout())
		return nil
	}
	if err != nil {
		return err
	}
	defer conn.Close()

	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		state, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return fmt.Errorf("make raw terminal failed: %w", err)
		}
		defer term.Restore(int(f.Fd()), state)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "Successfully connected to %s console. The escape sequence is ^]\n", name)

	readDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(cmd.OutOrStdout(), conn)
		readDone <- err
	}()
	writeDone := make(chan error, 1)
	go func() { writeDone <- copyUntilEscape(conn, in) }()

	select {
	case err = <-readDone:
	case err = <-writeDone:
	case <-ctx.Done():
	}
	var closeErr *websocket.CloseError
	if errors.As(err, &closeErr) && closeErr.Code == websocket.CloseAbnormalClosure {
		fmt.Fprint(cmd.ErrOrStderr(), "\nYou were disconnected from the console. This could be caused by one of the following:"+
			"\n - the target VM was powered off"+
			"\n - another user connected to the console of the target VM"+
			"\n - network issues\n")
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// dialConsole opens the console websocket, retrying while virt-api answers
// 400 (VMI not running yet) until timeout, as KubeVirt's virtctl does.
func dialConsole(ctx context.Context, c *client, name string, timeout time.Duration) (*stream, error) {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := c.dial(ctx, resourceVMI, name, "console")
		var se *streamError
		if err == nil || !errors.As(err, &se) || se.StatusCode != http.StatusBadRequest || timeout <= 0 {
			return conn, err
		}
		if time.Now().After(deadline) {
			return nil, errors.New("Timeout trying to connect to the virtual machine instance")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(consoleRetryInterval):
		}
	}
}

// copyUntilEscape forwards in to out until in ends or carries the escape
// byte; bytes typed before the escape in the same read still go out.
func copyUntilEscape(out io.Writer, in io.Reader) error {
	buf := make([]byte, 1024)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			i := bytes.IndexByte(chunk, escapeByte)
			if i >= 0 {
				chunk = chunk[:i]
			}
			if len(chunk) > 0 {
				if _, werr := out.Write(chunk); werr != nil {
					return werr
				}
			}
			if i >= 0 {
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
