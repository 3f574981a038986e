package virtctl

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// sshOptions are the flags ssh and scp share.
type sshOptions struct {
	username     string
	identityFile string
	port         int
	localOpts    []string
	localSSH     bool
	knownHosts   string
}

func (o *sshOptions) bind(f *pflag.FlagSet) {
	f.StringVarP(&o.username, "username", "l", "", "--username=: Set this to the user you want to open the SSH connection as; If unassigned, this will be empty and the SSH default will apply")
	f.StringVarP(&o.identityFile, "identity-file", "i", "", "--identity-file=/home/jdoe/.ssh/id_rsa: Set the path to a private key used for authenticating to the server; If not provided, the client will try to use the local ssh-agent at $SSH_AUTH_SOCK")
	f.IntVarP(&o.port, "port", "p", 22, "--port=22: Specify a port on the VM to send SSH traffic to")
	f.StringArrayVarP(&o.localOpts, "local-ssh-opts", "t", nil, "--local-ssh-opts=\"-o StrictHostKeyChecking=no\" : Additional options to be passed to the local ssh or scp client")
	f.BoolVar(&o.localSSH, "local-ssh", true, "--local-ssh=true: Use the ssh/scp client of your system, with this command as its ProxyCommand")
	f.StringVar(&o.knownHosts, "known-hosts", "", "--known-hosts=: Only used by KubeVirt's built-in client; the local client uses its own known_hosts")
}

// clientArgs are the arguments before the destination of the local ssh or
// scp: the tunnel through `port-forward --stdio`, then the user's options.
func (o *sshOptions) clientArgs(cmd *cobra.Command, t target, namespace string) ([]string, error) {
	if !o.localSSH {
		return nil, errors.New("virtkube's virtctl has no built-in SSH client; use --local-ssh=true (the default), which runs the ssh/scp of your system")
	}
	proxy, err := proxyCommand(cmd, t, namespace, o.port)
	if err != nil {
		return nil, err
	}
	args := []string{"-o", "ProxyCommand=" + proxy}
	for _, opt := range o.localOpts {
		args = append(args, strings.Fields(opt)...)
	}
	if o.identityFile != "" {
		args = append(args, "-i", o.identityFile)
	}
	return args, nil
}

// proxyCommand is this program run as `port-forward --stdio=true` to the
// target's SSH port, with the connection flags the user gave (kubeconfig,
// context, server, ...) so the tunnel reaches the same cluster.
func proxyCommand(cmd *cobra.Command, t target, namespace string, port int) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find this program for the ssh ProxyCommand: %w", err)
	}
	words := []string{self}
	cmd.Root().PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			words = append(words, "--"+f.Name+"="+f.Value.String())
		}
	})
	words = append(words, "port-forward", "--stdio=true", fmt.Sprintf("%s/%s/%s", t.kind, t.name, namespace), strconv.Itoa(port))
	for i, w := range words {
		words[i] = shellQuote(w)
	}
	return strings.Join(words, " "), nil
}

// shellQuote quotes s for the shell ssh runs its ProxyCommand with.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:@,+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sshHost is the host name the local client sees: kind/name.namespace,
// stable per VM so known_hosts entries keep matching.
func sshHost(user string, t target, namespace string) string {
	host := fmt.Sprintf("%s/%s.%s", t.kind, t.name, namespace)
	if user != "" {
		return user + "@" + host
	}
	return host
}

// parseSSHTarget reads [user@]type/name[/namespace]; a bare name is a VMI.
func parseSSHTarget(s string) (user string, t target, err error) {
	if u, rest, ok := strings.Cut(s, "@"); ok {
		user, s = u, rest
	}
	if !strings.Contains(s, "/") {
		s = "vmi/" + s
	}
	t, err = parseTarget(s)
	return user, t, err
}

// runLocal runs the system's ssh or scp with the terminal attached.
func runLocal(cmd *cobra.Command, bin string, args []string) error {
	c := exec.Command(bin, args...)
	c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	klog.V(2).InfoS("running local client", "command", c.String())
	return c.Run()
}

func newSSHCommand(cc clientcmd.ClientConfig) *cobra.Command {
	o := sshOptions{}
	var command string
	cmd := &cobra.Command{
		Use:   "ssh (VM|VMI)",
		Short: "Open a SSH connection to a virtual machine instance.",
		Example: `  # Connect to 'testvmi':
  virtctl ssh jdoe@vmi/testvmi

  # Connect to 'testvm' in 'mynamespace' namespace
  virtctl ssh jdoe@vm/testvm/mynamespace

  # Run a command and pass options to the local ssh:
  virtctl ssh -t "-o StrictHostKeyChecking=no" -c hostname jdoe@vm/testvm`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, t, err := parseSSHTarget(args[0])
			if err != nil {
				return err
			}
			if user == "" {
				user = o.username
			}
			ns, err := targetNamespace(cc, t)
			if err != nil {
				return err
			}
			sshArgs, err := o.clientArgs(cmd, t, ns)
			if err != nil {
				return err
			}
			sshArgs = append(sshArgs, sshHost(user, t, ns))
			if command != "" {
				sshArgs = append(sshArgs, command)
			}
			return runLocal(cmd, "ssh", sshArgs)
		},
	}
	o.bind(cmd.Flags())
	cmd.Flags().StringVarP(&command, "command", "c", "", "--command='ls /': Specify a command to execute in the VM")
	return cmd
}

func newSCPCommand(cc clientcmd.ClientConfig) *cobra.Command {
	o := sshOptions{}
	var recursive, preserve bool
	cmd := &cobra.Command{
		Use:   "scp (SOURCE) (DESTINATION)",
		Short: "SCP files from/to a virtual machine instance.",
		Example: `  # Copy a file to the home directory of jdoe on 'testvmi':
  virtctl scp myfile.bin jdoe@vmi/testvmi:myfile.bin

  # Copy a directory from 'testvm' in 'mynamespace':
  virtctl scp -r jdoe@vm/testvm/mynamespace:dir ./dir`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dst := parseSCPPath(args[0]), parseSCPPath(args[1])
			if (src.remote == nil) == (dst.remote == nil) {
				return errors.New("exactly one of source and destination must be remote: [user@]type/name[/namespace]:path")
			}
			remote := src.remote
			if remote == nil {
				remote = dst.remote
			}
			if remote.user == "" {
				remote.user = o.username
			}
			ns, err := targetNamespace(cc, remote.target)
			if err != nil {
				return err
			}
			scpArgs, err := o.clientArgs(cmd, remote.target, ns)
			if err != nil {
				return err
			}
			if recursive {
				scpArgs = append(scpArgs, "-r")
			}
			if preserve {
				scpArgs = append(scpArgs, "-p")
			}
			scpArgs = append(scpArgs, src.String(ns), dst.String(ns))
			return runLocal(cmd, "scp", scpArgs)
		},
	}
	o.bind(cmd.Flags())
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "--recursive=false: Set this to true to recursively copy directories")
	cmd.Flags().BoolVar(&preserve, "preserve", false, "--preserve=false: Set this to true to preserve modification times, access times, and modes from the original file")
	return cmd
}

// targetNamespace is the target's own namespace, else the selected one.
func targetNamespace(cc clientcmd.ClientConfig, t target) (string, error) {
	if t.namespace != "" {
		return t.namespace, nil
	}
	ns, _, err := cc.Namespace()
	return ns, err
}

// scpPath is one side of a copy: a local path, or a path on a VM.
type scpPath struct {
	path   string
	remote *scpRemote
}

type scpRemote struct {
	user   string
	target target
}

// parseSCPPath treats [user@]type/name[/namespace]:path as remote and
// anything else as local.
func parseSCPPath(s string) scpPath {
	head, path, ok := strings.Cut(s, ":")
	if !ok {
		return scpPath{path: s}
	}
	user, t, err := parseSSHTarget(head)
	if err != nil || !strings.Contains(strings.TrimPrefix(head, user+"@"), "/") {
		return scpPath{path: s}
	}
	return scpPath{path: path, remote: &scpRemote{user: user, target: t}}
}

// String is the argument the local scp gets for this side.
func (p scpPath) String(namespace string) string {
	if p.remote == nil {
		return p.path
	}
	return sshHost(p.remote.user, p.remote.target, namespace) + ":" + p.path
}
