// Command atr is the Agent Trust Registry: a certificate authority for
// software agents whose CA keys never leave a PKCS#11 token.
//
// One binary carries every role:
//
//	atr serve                      run the registry (HTTPS by default)
//	atr ceremony root              generate and self-sign the root key (root token)
//	atr ceremony intermediate      generate the issuing key and certify it with the root
//	atr ceremony rotate-intermediate   a new issuing key, certified by the root
//	atr ceremony log-key           generate the transparency-log key
//	atr ceremony log-key-ed25519   generate the log's Ed25519 key (for witnesses)
//	atr ceremony vrf-key           generate the name-index VRF key
//	atr ceremony show              list the objects on a token (read-only)
//	atr apikey create              bootstrap an API key directly in the database
//	atr apikey list|revoke         list or revoke API keys over the API (admin key)
//	atr migrate                    apply the database migrations
//	atr healthcheck                GET /healthz of the local server (exit 0 or 1)
//	atr agent keygen|register|renew|status|revoke   the agent client (key stays local)
//	atr agents list                list the agents an API key may see
//	atr audit                      read the audit trail (admin key)
//	atr verify CERT.pem            relying party: is this agent certificate valid? (--receipt: offline, with its log receipt)
//	atr log verify                 audit the transparency log against a pinned key
//	atr log monitor                owner: find certificates issued under your names that you did not request
//	atr version                    print the build version
//
// Every command has --help with an example. Configuration comes from flags
// and their ATR_* environment twins (see Config); secrets never come from
// the command line. Human output and JSON log lines never interleave on
// stderr (see stderrSink): client commands write human text, and once a
// command has written a JSON log line, the rest of its stderr is JSON too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	a := &app{
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		lookupEnv: os.LookupEnv,
		now:       time.Now,
		argv:      os.Args,
	}
	code := a.run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// app is everything a command may touch of the outside world, so that tests
// can run commands in-process.
type app struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	now            func() time.Time
	argv           []string // the full command line, for ceremony transcripts
	// ready, when set, receives the listening address once serve accepts
	// connections (tests).
	ready chan<- string
	// readHeaderTimeout, when set, replaces serve's header timeout (tests).
	readHeaderTimeout time.Duration
	// listen, when set, replaces net.Listen("tcp", …) for serve's main
	// listener (tests).
	listen func(address string) (net.Listener, error)
}

// listenTCP listens on address for serve's main listener.
func (a *app) listenTCP(address string) (net.Listener, error) {
	if a.listen != nil {
		return a.listen(address)
	}
	return net.Listen("tcp", address)
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, a *app, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "run the registry server", runServe},
		{"ceremony", "key ceremonies: root, intermediate, rotate-intermediate, log-key, log-key-ed25519, vrf-key, show", runCeremony},
		{"apikey", "API keys: create (in the database), list, revoke (admin API key)", runAPIKey},
		{"migrate", "apply the database migrations", runMigrate},
		{"healthcheck", "check the local server's /healthz (exit 0 when healthy)", runHealthcheck},
		{"agent", "agent client: keygen, register, renew (--watch), status, revoke", runAgent},
		{"agents", "agents: list (API key)", runAgents},
		{"audit", "read the audit trail (admin API key)", runAudit},
		{"verify", "verify an agent certificate (registry or offline with CRL); exit 0 only when valid", runVerify},
		{"log", "transparency log: verify (checkpoint signature, consistency, inclusion), monitor (your names)", runLog},
		{"version", "print the version", runVersion},
	}
}

// usageError is a command-line mistake: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// subcommandError is an error of a second-level command ("agent register"):
// the message names that command, not its parent.
type subcommandError struct {
	name string
	err  error
}

func (e *subcommandError) Error() string { return e.err.Error() }
func (e *subcommandError) Unwrap() error { return e.err }

// run dispatches args and returns the exit status.
func (a *app) run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		a.mainUsage(a.stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		sink := newStderrSink(a.stderr)
		cmd := *a
		cmd.stderr = sink
		err := c.run(ctx, &cmd, args[1:])
		name := c.name
		var se *subcommandError
		if errors.As(err, &se) {
			name = se.name
		}
		var ue *usageError
		switch {
		case err == nil:
			sink.flush()
			return 0
		case errors.Is(err, flag.ErrHelp):
			sink.flush()
			return 0
		case errors.As(err, &ue):
			sink.fail(name, err, 2, fmt.Sprintf("atr %s: %v\nRun 'atr %s --help' for usage.\n", name, err, name))
			return 2
		default:
			sink.fail(name, err, 1, fmt.Sprintf("atr %s: %v\n", name, err))
			return 1
		}
	}
	fmt.Fprintf(a.stderr, "atr: unknown command %q\n", args[0])
	a.mainUsage(a.stderr)
	return 2
}

func (a *app) mainUsage(w io.Writer) {
	fmt.Fprintf(w, "atr — Agent Trust Registry\n\nUsage: atr <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'atr <command> --help' for a command's flags.\n\nExample:\n  atr serve --data-dir ./var --listen 127.0.0.1:8443\n")
}

// newFlagSet returns a FlagSet whose usage prints the synopsis, the
// description, the flags and the example.
func (a *app) newFlagSet(name, synopsis, description, example string) *flag.FlagSet {
	fs := flag.NewFlagSet("atr "+name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: atr %s\n\n%s\n\nFlags:\n", synopsis, strings.TrimSpace(description))
		fs.PrintDefaults()
		fmt.Fprintf(w, "\nExample:\n%s\n", indent(strings.TrimSpace(example)))
	}
	return fs
}

func indent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}

// parse parses args, sending --help output to stdout, and refuses stray
// positional arguments.
func (a *app) parse(fs *flag.FlagSet, args []string) error {
	for _, arg := range args {
		if arg == "-h" || arg == "-help" || arg == "--help" || arg == "--h" {
			fs.SetOutput(a.stdout)
			fs.Usage()
			return flag.ErrHelp
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// loadConfig binds the option groups to fs, parses args and returns the
// completed, validated configuration.
func (a *app) loadConfig(fs *flag.FlagSet, groups optGroup, args []string) (Config, error) {
	return a.loadConfigUsage(fs, groups, nil, args)
}

// loadConfigUsage is loadConfig with some flags' usage text replaced, for a
// command that uses a server option differently (healthcheck's --listen is
// the address it calls, not one to listen on).
func (a *app) loadConfigUsage(fs *flag.FlagSet, groups optGroup, usage map[string]string, args []string) (Config, error) {
	cfg := DefaultConfig()
	if err := cfg.bind(fs, groups, a.lookupEnv); err != nil {
		return cfg, err
	}
	for name, u := range usage {
		f := fs.Lookup(name)
		if f == nil {
			return cfg, fmt.Errorf("no flag --%s to describe", name)
		}
		if _, env, ok := strings.Cut(f.Usage, " (env "); ok {
			u += " (env " + env
		}
		f.Usage = u
	}
	if err := a.parse(fs, args); err != nil {
		return cfg, err
	}
	cfg.Complete()
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func runVersion(_ context.Context, a *app, args []string) error {
	fs := a.newFlagSet("version", "version", "Print the module version, VCS revision and Go version of this binary.", "atr version")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, versionString())
	return nil
}

func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "atr (unknown build)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	out := []string{"atr", v, bi.GoVersion}
	if r := settings["vcs.revision"]; r != "" {
		if settings["vcs.modified"] == "true" {
			r += "+dirty"
		}
		out = append(out, "rev "+r)
	}
	return strings.Join(out, " ")
}

// subcommand dispatches a second-level command such as "ceremony root".
func (a *app) subcommand(ctx context.Context, parent string, subs map[string]func(context.Context, *app, []string) error, summary map[string]string, args []string) error {
	usage := func(w io.Writer) {
		names := make([]string, 0, len(subs))
		for n := range subs {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(w, "Usage: atr %s <command> [flags]\n\nCommands:\n", parent)
		for _, n := range names {
			fmt.Fprintf(w, "  %-20s %s\n", n, summary[n])
		}
		fmt.Fprintf(w, "\nRun 'atr %s <command> --help' for a command's flags.\n\nExample:\n  atr %s %s --help\n", parent, parent, names[0])
	}
	if len(args) == 0 {
		usage(a.stderr)
		return usagef("missing command")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(a.stdout)
		return flag.ErrHelp
	}
	f, ok := subs[args[0]]
	if !ok {
		usage(a.stderr)
		return usagef("unknown command %q", args[0])
	}
	if err := f(ctx, a, args[1:]); err != nil {
		return &subcommandError{name: parent + " " + args[0], err: err}
	}
	return nil
}
