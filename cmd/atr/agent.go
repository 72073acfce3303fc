package main

// agent.go is `atr agent keygen | register | renew | status | revoke | token`: flags,
// help texts, printing and wiring. The work (keys, durable files, the
// renewal order and schedule) is package agent's; see its documentation for
// the files an agent keeps. Paths are flags, each with an ATR_* twin:
//
//	--key   KEY    private key, PKCS#8 PEM, mode 0600 (ATR_AGENT_KEY)
//	--cert  CERT   the agent's certificate, PEM leaf only (ATR_AGENT_CERT)
//	--chain CHAIN  the intermediates (ATR_AGENT_CHAIN); default: next to the
//	               certificate, CERT with ".pem" replaced by ".chain.pem"
//	               (agent.pem → agent.chain.pem; agent.crt → agent.crt.chain.pem)
//	KEY.next       the staged key of a renewal in progress (agent.Renewer)

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/apikey"
)

// agentMaxAPIKey bounds an API key file.
const agentMaxAPIKey = 4 << 10

// exitStatusHelp is appended to every agent/verify/log command description.
const exitStatusHelp = `Exit status: 0 success; 1 a failed check or an error (server errors show
the error code and request ID); 2 a usage error.`

func runAgent(ctx context.Context, a *app, args []string) error {
	return a.subcommand(ctx, "agent", map[string]func(context.Context, *app, []string) error{
		"keygen":   runAgentKeygen,
		"register": runAgentRegister,
		"renew":    runAgentRenew,
		"status":   runAgentStatus,
		"revoke":   runAgentRevoke,
		"token":    runAgentToken,
	}, map[string]string{
		"keygen":   "generate the agent's private key locally (mode 0600)",
		"register": "register the agent with a locally built CSR (API key)",
		"renew":    "rotate the certificate over mTLS with a new key; --watch renews forever",
		"status":   "show the agent (API key) or the local certificate's validity",
		"revoke":   "revoke the agent's certificate (API key)",
		"token":    "print a JWT-SVID for an audience (mTLS with the agent's certificate)",
	}, args)
}

// agentFlag selects the common agent flags a command registers.
type agentFlag int

const (
	afServer agentFlag = 1 << iota
	afCABundle
	afKey
	afCert
	afAPIKey
	afName
)

// agentOpts are the common agent flags. A flag given on the command line wins
// over its environment twin, which wins over the default.
type agentOpts struct {
	server     string // --server, ATR_SERVER
	caBundle   string // --ca-bundle, ATR_CA_BUNDLE (default: the system pool)
	key        string // --key, ATR_AGENT_KEY
	cert       string // --cert, ATR_AGENT_CERT
	chain      string // --chain, ATR_AGENT_CHAIN (default: derived from cert)
	apiKeyFile string // --api-key-file, ATR_API_KEY_FILE
	apiKey     string // ATR_API_KEY only (never a flag); the file wins
	name       string // --name, ATR_AGENT_NAME
}

// envString registers a string flag whose default comes from env when set.
func envString(fs *flag.FlagSet, lookupEnv func(string) (string, bool), p *string, name, env, def, usage string) {
	*p = def
	if v, ok := lookupEnv(env); ok {
		*p = v
	}
	fs.StringVar(p, name, *p, usage+" (env "+env+")")
}

func (o *agentOpts) bind(fs *flag.FlagSet, lookupEnv func(string) (string, bool), which agentFlag) {
	if which&afServer != 0 {
		envString(fs, lookupEnv, &o.server, "server", "ATR_SERVER", "", "registry base URL, e.g. https://atr.example.org:8443")
	}
	if which&afCABundle != 0 {
		envString(fs, lookupEnv, &o.caBundle, "ca-bundle", "ATR_CA_BUNDLE", "", "PEM roots trusted for the server's TLS certificate (default: the system pool)")
	}
	if which&afKey != 0 {
		envString(fs, lookupEnv, &o.key, "key", "ATR_AGENT_KEY", "", "the agent's private key file (PEM, mode 0600)")
	}
	if which&afCert != 0 {
		envString(fs, lookupEnv, &o.cert, "cert", "ATR_AGENT_CERT", "", "the agent's certificate file (PEM)")
		envString(fs, lookupEnv, &o.chain, "chain", "ATR_AGENT_CHAIN", "", "the intermediates file (default: CERT with .pem replaced by .chain.pem)")
	}
	if which&afAPIKey != 0 {
		envString(fs, lookupEnv, &o.apiKeyFile, "api-key-file", "ATR_API_KEY_FILE", "", "file holding the API key, mode 0600 (the owner's key; the admin key for admin commands); ATR_API_KEY may hold the key itself")
		if v, ok := lookupEnv("ATR_API_KEY"); ok {
			o.apiKey = v
		}
	}
	if which&afName != 0 {
		envString(fs, lookupEnv, &o.name, "name", "ATR_AGENT_NAME", "", "agent name, e.g. billing-bot.acme (default for renew/status/revoke: from --cert)")
	}
}

func (o *agentOpts) chainFile() string { return agent.ChainPath(o.cert, o.chain) }

// readAPIKey returns the API key from --api-key-file, else ATR_API_KEY, else
// "". A key that is not of the API key format (apikey.Parse; "null"
// written by a failed jq, say) is refused with an error naming where it came
// from, and is never sent: the server would count it against this machine's
// address as a failed authentication.
func (o *agentOpts) readAPIKey() (string, error) {
	var k, source string
	if o.apiKeyFile == "" {
		k, source = strings.TrimSpace(o.apiKey), "ATR_API_KEY"
		if k == "" {
			return "", nil
		}
	} else {
		data, err := agent.ReadSecretFile(o.apiKeyFile, agentMaxAPIKey)
		if err != nil {
			return "", fmt.Errorf("reading the API key: %w", err)
		}
		k, source = strings.TrimSpace(string(data)), o.apiKeyFile+" (--api-key-file / ATR_API_KEY_FILE)"
		if k == "" {
			return "", fmt.Errorf("reading the API key: %s is empty", o.apiKeyFile)
		}
	}
	if _, err := apikey.Parse(k); err != nil {
		return "", fmt.Errorf("the API key in %s is not an ATR API key, so it was not sent: %w", source, err)
	}
	return k, nil
}

// newClient returns an API client for o.server. apiKey may be empty; cert, when
// non-nil, is presented over TLS.
func (o *agentOpts) newClient(apiKey string, cert *tls.Certificate) (*client.Client, error) {
	if o.server == "" {
		return nil, usagef("--server (ATR_SERVER) is required")
	}
	opts := []client.Option{client.WithUserAgent("atr-cli")}
	if o.caBundle != "" {
		pool, err := loadCertPool(o.caBundle)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithRootCAs(pool))
	}
	if apiKey != "" {
		opts = append(opts, client.WithAPIKey(apiKey))
	}
	if cert != nil {
		opts = append(opts, client.WithClientCertificate(*cert))
	}
	c, err := client.New(o.server, opts...)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return c, nil
}

// loadCertPool reads a PEM bundle into a pool.
func loadCertPool(path string) (*x509.CertPool, error) {
	data, err := agent.ReadFile(path, agent.MaxCertFile)
	if err != nil {
		return nil, fmt.Errorf("reading the CA bundle: %w", err)
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("CA bundle %s: %w", path, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// explain renders err for the terminal (agent.Explain); a server error shows
// its stable code, HTTP status and request ID so that an operator can find it
// in the logs. Usage errors pass unchanged.
func explain(what string, err error) error {
	var ue *usageError
	if errors.As(err, &ue) {
		return err
	}
	return agent.Explain(what, err)
}

// showSerial spells a serial number from the server canonically
// (ca.FormatSerial), or as given when it is not one.
func showSerial(s string) string {
	if c, err := ca.CanonicalSerial(s); err == nil {
		return c
	}
	return s
}

// revocationReasons lists the reason names ca.ReasonCode accepts, in code order.
func revocationReasons() []string {
	var out []string
	for code := 0; code <= 10; code++ {
		if n := ca.ReasonName(code); n != "" {
			if _, err := ca.ReasonCode(n); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// ---- files and keys (package agent; wrappers for the other commands) ------

// keyTypes lists the key types keygen offers; the server also accepts RSA keys
// brought along.
const keyTypes = "p256, p384, ed25519"

// publicKeyFingerprint is the SHA-256 of k's SubjectPublicKeyInfo, as
// keygen prints it.
func publicKeyFingerprint(k crypto.Signer) string {
	fp, err := ca.PublicKeyFingerprint(k.Public())
	if err != nil {
		return "?"
	}
	return fp
}

// generateAgentKey generates a key of a type keygen offers (agent.GenerateKey);
// any other type is a usage error.
func generateAgentKey(typ string) (crypto.Signer, error) {
	if typ == agent.KeyRSA {
		return nil, usagef("--type %q: want one of %s", typ, keyTypes)
	}
	k, err := agent.GenerateKey(typ)
	if errors.Is(err, agent.ErrUnknownKeyType) {
		return nil, usagef("--type %q: want one of %s", typ, keyTypes)
	}
	return k, err
}

// parseCertsPEM parses PEM certificates strictly (ca.ParseCertificatesPEM),
// allowing long bundles.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	return ca.ParseCertificatesPEM(data, 100)
}

// slogToLogrus is a slog.Handler writing to a logrus entry: package agent
// logs through log/slog, the command through logrus (text or JSON, with the
// redaction hook).
type slogToLogrus struct{ e *logrus.Entry }

func logrusLevel(l slog.Level) logrus.Level {
	switch {
	case l >= slog.LevelError:
		return logrus.ErrorLevel
	case l >= slog.LevelWarn:
		return logrus.WarnLevel
	case l >= slog.LevelInfo:
		return logrus.InfoLevel
	}
	return logrus.DebugLevel
}

func (h slogToLogrus) Enabled(_ context.Context, l slog.Level) bool {
	return h.e.Logger.IsLevelEnabled(logrusLevel(l))
}

func (h slogToLogrus) Handle(_ context.Context, r slog.Record) error {
	f := logrus.Fields{}
	r.Attrs(func(a slog.Attr) bool { f[a.Key] = a.Value.Any(); return true })
	h.e.WithFields(f).Log(logrusLevel(r.Level), r.Message)
	return nil
}

func (h slogToLogrus) WithAttrs(as []slog.Attr) slog.Handler {
	f := logrus.Fields{}
	for _, a := range as {
		f[a.Key] = a.Value.Any()
	}
	return slogToLogrus{h.e.WithFields(f)}
}

func (h slogToLogrus) WithGroup(string) slog.Handler { return h }

// ---- keygen ----------------------------------------------------------------

func runAgentKeygen(_ context.Context, a *app, args []string) error {
	fs := a.newFlagSet("agent keygen", "agent keygen --key FILE [--type p256|p384|ed25519]",
		`Generate the agent's private key on this machine and write it as PKCS#8
PEM with mode 0600, atomically (temporary file, fsync, link). Refuses to
overwrite an existing file. The key never leaves the machine: register and
renew send only a CSR.

`+exitStatusHelp,
		`atr agent keygen --key ./agent.key
atr agent keygen --key ./agent.key --type ed25519`)
	var o agentOpts
	o.bind(fs, a.lookupEnv, afKey)
	typ := fs.String("type", "p256", "key type: "+keyTypes)
	if err := a.parse(fs, args); err != nil {
		return err
	}
	if o.key == "" {
		return usagef("--key (ATR_AGENT_KEY) is required")
	}
	k, err := generateAgentKey(*typ)
	if err != nil {
		return err
	}
	data, err := agent.MarshalKey(k)
	if err != nil {
		return err
	}
	if err := agent.WriteFile(o.key, data, agent.KeyFileMode, false); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "wrote %s private key to %s (mode 0600)\npublic key SHA-256: %s\n", agent.KeyType(k), o.key, publicKeyFingerprint(k))
	return nil
}

// ---- register --------------------------------------------------------------

// listFlag collects a repeatable, comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	*l = append(*l, splitList(s)...)
	return nil
}

// metadataFlag collects repeatable k=v pairs.
type metadataFlag map[string]string

func (m metadataFlag) String() string { return "" }
func (m metadataFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("metadata %q: want key=value", s)
	}
	if _, dup := m[k]; dup {
		return fmt.Errorf("metadata key %q given twice", k)
	}
	m[k] = v
	return nil
}

func runAgentRegister(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("agent register", "agent register --name NAME --server URL --api-key-file FILE --key KEY --cert CERT [flags]",
		`Register an agent: build a CSR over the local key (the key never leaves the
machine), send it with the owner's API key, check that the certificate
returned certifies this key and names this agent, and write the certificate
(CERT, leaf only) and its intermediates (--chain; default CERT with .pem
replaced by .chain.pem) atomically, and the certificate's transparency-log
receipt to CERT with .pem replaced by .receipt.json (check it offline with
'atr verify CERT --receipt'). Prints the serial, the SHA-256 fingerprint
(keep it for 'atr log monitor --known') and the log index. Refuses to
overwrite an existing CERT unless --force.

`+exitStatusHelp,
		`atr agent keygen --key agent.key
atr agent register --name billing-bot.acme --server https://127.0.0.1:8443 \
    --ca-bundle ./var/ca/bundle.pem --api-key-file team.apikey \
    --key agent.key --cert agent.pem --capability invoices:read --metadata team=billing`)
	var o agentOpts
	o.bind(fs, a.lookupEnv, afServer|afCABundle|afKey|afCert|afAPIKey|afName)
	var caps listFlag
	md := metadataFlag{}
	fs.Var(&caps, "capability", "capability to record (repeatable or comma-separated)")
	fs.Var(md, "metadata", "key=value metadata to record (repeatable)")
	force := fs.Bool("force", false, "overwrite an existing certificate file")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	switch {
	case o.name == "":
		return usagef("--name (ATR_AGENT_NAME) is required")
	case o.key == "":
		return usagef("--key (ATR_AGENT_KEY) is required (create one with 'atr agent keygen')")
	case o.cert == "":
		return usagef("--cert (ATR_AGENT_CERT) is required")
	}
	name, err := ca.NormalizeAgentName(o.name)
	if err != nil {
		return usagef("--name %q: %v", o.name, err)
	}
	apiKey, err := o.readAPIKey()
	if err != nil {
		return err
	}
	if apiKey == "" {
		return usagef("--api-key-file (ATR_API_KEY_FILE) or ATR_API_KEY is required")
	}
	if !*force {
		if _, err := os.Lstat(o.cert); err == nil {
			return fmt.Errorf("%s already exists; refusing to overwrite it (use --force)", o.cert)
		}
	}
	k, err := agent.LoadKey(o.key)
	if err != nil {
		return err
	}
	c, err := o.newClient(apiKey, nil)
	if err != nil {
		return err
	}
	md2 := map[string]string(md)
	if len(md2) == 0 {
		md2 = nil
	}
	iss, err := agent.Register(ctx, c, k, client.RegisterRequest{Name: name, Capabilities: caps, Metadata: md2})
	if err != nil {
		return err
	}
	leaf, issued := iss.Leaf, iss.Answer
	if err := agent.WriteFile(o.chainFile(), iss.ChainPEM, agent.CertFileMode, true); err != nil {
		return err
	}
	if err := agent.WriteFile(o.cert, iss.LeafPEM, agent.CertFileMode, *force); err != nil {
		return err
	}
	if err := agent.WriteReceipt(o.cert, iss.Receipt); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "registered agent %s (owner %s)\nserial: %s\nfingerprint SHA-256: %s\nlog index: %d\nvalid: %s to %s\ncertificate: %s\nchain: %s\n",
		name, issued.Owner, showSerial(issued.Serial), ca.Fingerprint(leaf), issued.LogIndex,
		leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), o.cert, o.chainFile())
	if len(issued.Receipt) > 0 {
		fmt.Fprintf(a.stdout, "log receipt: %s\n", agent.ReceiptPath(o.cert))
	}
	return nil
}

// ---- renew -----------------------------------------------------------------

// signalTarget is a --signal option: a process (by PID or PID file) and a signal.
type signalTarget struct {
	pid     int
	pidFile string
	sig     syscall.Signal
}

// signalByName maps the signals --signal accepts.
func signalByName(name string) (syscall.Signal, bool) {
	switch name {
	case "HUP":
		return syscall.SIGHUP, true
	case "USR1":
		return syscall.SIGUSR1, true
	case "USR2":
		return syscall.SIGUSR2, true
	case "TERM":
		return syscall.SIGTERM, true
	case "INT":
		return syscall.SIGINT, true
	case "QUIT":
		return syscall.SIGQUIT, true
	}
	return 0, false
}

// parseSignalTarget parses "PID[:SIGNAL]" or "PIDFILE[:SIGNAL]" (a path, with a
// '/'); SIGNAL is HUP (default), USR1, USR2, TERM, INT or QUIT, with or
// without the SIG prefix.
func parseSignalTarget(s string) (signalTarget, error) {
	var t signalTarget
	target, sig, hasSig := strings.Cut(s, ":")
	t.sig = syscall.SIGHUP
	if hasSig {
		v, ok := signalByName(strings.TrimPrefix(strings.ToUpper(sig), "SIG"))
		if !ok {
			return t, fmt.Errorf("--signal %q: unknown signal %q (HUP, USR1, USR2, TERM, INT, QUIT)", s, sig)
		}
		t.sig = v
	}
	if strings.Contains(target, "/") {
		t.pidFile = target
		return t, nil
	}
	pid, err := strconv.Atoi(target)
	if err != nil || pid <= 1 {
		return t, fmt.Errorf("--signal %q: want PID:SIGNAL or /path/to/pidfile:SIGNAL (PID > 1)", s)
	}
	t.pid = pid
	return t, nil
}

func (t signalTarget) send() error {
	pid := t.pid
	if t.pidFile != "" {
		data, err := agent.ReadFile(t.pidFile, 64)
		if err != nil {
			return fmt.Errorf("reading the PID file: %w", err)
		}
		if pid, err = strconv.Atoi(strings.TrimSpace(string(data))); err != nil || pid <= 1 {
			return fmt.Errorf("PID file %s does not hold a PID", t.pidFile)
		}
	}
	if err := syscall.Kill(pid, t.sig); err != nil {
		return fmt.Errorf("sending %v to %d: %w", t.sig, pid, err)
	}
	return nil
}

func runAgentRenew(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("agent renew", "agent renew --server URL --key KEY --cert CERT [--watch] [flags]",
		`Rotate the agent's certificate over mutual TLS, authenticating with the
current key and certificate (no API key). Every renewal uses a NEW key, and
the files are replaced in an order that never leaves a certificate without
its key on disk:
  1. a renewal interrupted by a crash is finished (KEY.next matches CERT:
     it is moved into place) or discarded (KEY.next is removed);
  2. the new key is written to KEY.next (0600, atomic, fsync);
  3. the server rotates; on failure KEY.next is removed, nothing changed;
  4. CHAIN then CERT are replaced atomically (temporary file, fsync, rename);
  5. KEY.next is renamed over KEY; then the reload hooks run.
Reload your server on the hook (--exec, --signal): it runs once key and
certificate match.

With --watch, atr stays in the foreground and renews at about 2/3 of each
certificate's lifetime (±10% of the lifetime, random; or --renew-before the
expiry), retrying failures with
exponential backoff capped at --max-backoff (and honouring Retry-After). It
stops on SIGINT/SIGTERM (exit 0), or with exit 1 when the server refuses the
renewal for good (for example: the agent was revoked) or the certificate
expired before it could be renewed. A refused renewal says why: a revoked or
superseded certificate is named as such.

Log lines go to stderr as human-readable text; --log-format json writes JSON
lines for a log collector (the final error included), never both.

`+exitStatusHelp,
		`atr agent renew --server https://127.0.0.1:8443 --ca-bundle ./var/ca/bundle.pem \
    --key agent.key --cert agent.pem
atr agent renew --watch --key agent.key --cert agent.pem \
    --exec 'systemctl reload my-agent' --signal /run/my-agent.pid:HUP`)
	var o agentOpts
	o.bind(fs, a.lookupEnv, afServer|afCABundle|afKey|afCert|afName)
	watch := fs.Bool("watch", false, "keep running and renew at about 2/3 of each lifetime")
	execCmd := fs.String("exec", "", "shell command to run after each renewal (env ATR_AGENT_CERT, ATR_AGENT_KEY, ATR_AGENT_CHAIN, ATR_AGENT_SERIAL set)")
	var signals listFlag
	fs.Var(&signals, "signal", "PID:SIGNAL or PIDFILE:SIGNAL to signal after each renewal (repeatable; default signal HUP)")
	typ := fs.String("type", "", "type of the new keys: "+keyTypes+" (default: the current key's type)")
	maxBackoff := fs.Duration("max-backoff", 5*time.Minute, "cap of the retry backoff with --watch")
	renewBefore := fs.Duration("renew-before", 0, "with --watch: renew when this much validity is left (default: at 2/3 of the lifetime)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log lines on stderr: text (human-readable) or json (then errors are JSON lines too)")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	switch {
	case o.key == "":
		return usagef("--key (ATR_AGENT_KEY) is required")
	case o.cert == "":
		return usagef("--cert (ATR_AGENT_CERT) is required")
	case o.server == "":
		return usagef("--server (ATR_SERVER) is required")
	case *maxBackoff < time.Second:
		return usagef("--max-backoff must be at least 1s")
	case *renewBefore < 0:
		return usagef("--renew-before must not be negative")
	}
	if *typ != "" {
		if _, err := generateAgentKey(*typ); err != nil {
			return err
		}
	}
	if _, err := parseLogLevel(*logLevel); err != nil {
		return usagef("--log-level: %v", err)
	}
	newLog := newTextLogger
	switch *logFormat {
	case "text":
	case "json":
		newLog = newLogger
	default:
		return usagef("--log-format %q: want text or json", *logFormat)
	}
	var targets []signalTarget
	for _, s := range signals {
		t, err := parseSignalTarget(s)
		if err != nil {
			return usagef("%v", err)
		}
		targets = append(targets, t)
	}
	name := ""
	if o.name != "" {
		n, err := ca.NormalizeAgentName(o.name)
		if err != nil {
			return usagef("--name %q: %v", o.name, err)
		}
		name = n
	}
	if _, err := o.newClient("", nil); err != nil { // a bad --server is a usage error, not a retry
		return err
	}
	r := &agent.Renewer{
		KeyFile: o.key, CertFile: o.cert, ChainFile: o.chainFile(), Name: name, KeyType: *typ,
		Logger: slog.New(slogToLogrus{newLog(a.stderr, *logLevel).WithField("component", "agent-renew")}),
		Now:    a.now, RenewBefore: *renewBefore, MaxBackoff: *maxBackoff,
		Dial: func(cert tls.Certificate) (agent.Rotator, error) {
			return o.newClient("", &cert)
		},
	}
	if *execCmd != "" {
		cmdline := *execCmd
		r.Hooks = append(r.Hooks, func(ctx context.Context, leaf *x509.Certificate) error {
			cmd := exec.CommandContext(ctx, "/bin/sh", "-c", cmdline)
			cmd.Env = append(os.Environ(), "ATR_AGENT_CERT="+r.CertFile, "ATR_AGENT_KEY="+r.KeyFile,
				"ATR_AGENT_CHAIN="+r.ChainFile, "ATR_AGENT_SERIAL="+ca.FormatSerial(leaf.SerialNumber))
			cmd.Stdout, cmd.Stderr = a.stderr, a.stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("--exec %q: %w", cmdline, err)
			}
			return nil
		})
	}
	for _, t := range targets {
		r.Hooks = append(r.Hooks, func(context.Context, *x509.Certificate) error { return t.send() })
	}
	if *watch {
		return r.Watch(ctx)
	}
	leaf, err := r.RenewOnce(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "renewed: serial %s, valid until %s\nfingerprint SHA-256: %s\ncertificate: %s\nkey: %s\nchain: %s\n",
		ca.FormatSerial(leaf.SerialNumber), leaf.NotAfter.UTC().Format(time.RFC3339), ca.Fingerprint(leaf), r.CertFile, r.KeyFile, r.ChainFile)
	if _, err := os.Stat(agent.ReceiptPath(r.CertFile)); err == nil {
		fmt.Fprintf(a.stdout, "log receipt: %s\n", agent.ReceiptPath(r.CertFile))
	}
	return nil
}

// ---- token -----------------------------------------------------------------

func runAgentToken(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("agent token", "agent token --server URL --key KEY --cert CERT --audience AUD [--audience AUD ...] [--ttl D] [--json]",
		`Print a JWT-SVID (SPIFFE JWT-SVID: sub the agent's SPIFFE ID, aud the
audiences given, exp at most 5 minutes away and never after the certificate's
expiry, jti unique; ES256) on stdout, for the agent to send to a service as
"Authorization: Bearer <token>". It is fetched over mutual TLS with the
agent's key and certificate (POST /v1/agents/{name}/jwt-svid, no API key: only
the agent itself gets one; a revoked, superseded or expired certificate gets
none). The service verifies it with the registry's SPIFFE bundle
(GET /v1/ca/spiffe-bundle) or its JWKS (GET /.well-known/jwks.json, found
through /.well-known/openid-configuration). --json prints the token with its
SPIFFE ID, audiences and times. Go agents use agent.Source.JWTSVID instead,
which caches tokens.

`+exitStatusHelp,
		`atr agent token --server https://127.0.0.1:8443 --ca-bundle ./var/ca/bundle.pem \
    --key agent.key --cert agent.pem --audience https://payments.example.org
curl -H "Authorization: Bearer $(atr agent token --key agent.key --cert agent.pem \
    --audience payments --ttl 2m)" https://payments.example.org/balance`)
	var o agentOpts
	o.bind(fs, a.lookupEnv, afServer|afCABundle|afKey|afCert)
	var audience listFlag
	fs.Var(&audience, "audience", "an audience of the token, the aud claim (required; repeatable or comma-separated, at most 8)")
	ttl := fs.Duration("ttl", 0, "lifetime, whole seconds from 10s to 5m (default 5m; never past the certificate's expiry)")
	asJSON := fs.Bool("json", false, "print JSON: token, spiffe_id, audience, issued_at, expires_at")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	switch {
	case o.key == "":
		return usagef("--key (ATR_AGENT_KEY) is required")
	case o.cert == "":
		return usagef("--cert (ATR_AGENT_CERT) is required")
	case len(audience) == 0:
		return usagef("--audience is required")
	case *ttl != 0 && ca.CheckJWTSVIDLifetime(*ttl) != nil:
		return usagef("--ttl %v: %v", *ttl, ca.CheckJWTSVIDLifetime(*ttl))
	}
	if err := ca.CheckJWTAudience(audience); err != nil {
		return usagef("--audience: %v", err)
	}
	if _, err := o.newClient("", nil); err != nil { // a bad --server is a usage error
		return err
	}
	id, err := (&agent.Renewer{KeyFile: o.key, CertFile: o.cert, ChainFile: o.chainFile()}).Load()
	if err != nil {
		return err
	}
	dial := func(cert tls.Certificate) (agent.Rotator, error) { return o.newClient("", &cert) }
	svid, err := agent.FetchJWTSVID(ctx, dial, id, audience, *ttl, a.now())
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(a.stdout, svid)
	}
	_, err = fmt.Fprintln(a.stdout, svid.Token)
	return err
}

// ---- status and revoke -----------------------------------------------------

// resolveName returns --name, normalized, or the name in the local certificate.
func (o *agentOpts) resolveName() (string, error) {
	if o.name != "" {
		n, err := ca.NormalizeAgentName(o.name)
		if err != nil {
			return "", usagef("--name %q: %v", o.name, err)
		}
		return n, nil
	}
	if o.cert == "" {
		return "", usagef("--name (ATR_AGENT_NAME) or --cert (ATR_AGENT_CERT) is required")
	}
	leaf, _, err := agent.LoadCertificate(o.cert, "")
	if err != nil {
		return "", err
	}
	n, _, err := ca.AgentIdentity(leaf)
	if err != nil {
		return "", fmt.Errorf("%s: %w", o.cert, err)
	}
	return n, nil
}

func runAgentStatus(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("agent status", "agent status [--name NAME --server URL --api-key-file FILE] [--cert CERT]",
		`Show the agent. With an API key (--api-key-file or ATR_API_KEY) the registry
is asked (GET /v1/agents/{name}): status, current serial and the certificate
history; the exit status is 0 only when the agent is active. Without an API
key, the local certificate (--cert) is shown: identity, serial and validity;
the exit status is 0 only while it is valid (expiry is not revocation: ask
the registry or run 'atr verify' for that).

`+exitStatusHelp,
		`atr agent status --cert agent.pem
atr agent status --name billing-bot.acme --server https://127.0.0.1:8443 --api-key-file team.apikey`)
	var o agentOpts
	o.bind(fs, a.lookupEnv, afServer|afCABundle|afCert|afAPIKey|afName)
	if err := a.parse(fs, args); err != nil {
		return err
	}
	apiKey, err := o.readAPIKey()
	if err != nil {
		return err
	}
	var localErr error
	if o.cert != "" {
		localErr = a.printLocalCert(o.cert, o.chainFile())
	}
	if apiKey == "" {
		if o.cert == "" {
			return usagef("give --cert to show the local certificate, or an API key to ask the registry")
		}
		return localErr
	}
	name, err := o.resolveName()
	if err != nil {
		return err
	}
	c, err := o.newClient(apiKey, nil)
	if err != nil {
		return err
	}
	d, err := c.Get(ctx, name)
	if err != nil {
		return explain("getting "+name, err)
	}
	fmt.Fprintf(a.stdout, "agent: %s\nowner: %s\nstatus: %s\ncurrent serial: %s\n", d.Name, d.Owner, d.Status, showSerial(d.CurrentSerial))
	if len(d.Capabilities) > 0 {
		fmt.Fprintf(a.stdout, "capabilities: %s\n", strings.Join(d.Capabilities, ", "))
	}
	for _, c := range d.Certificates {
		line := fmt.Sprintf("  %s %-10s %s → %s log %d", showSerial(c.Serial), c.Status, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), c.LogIndex)
		if c.RevocationReason != "" {
			line += " (" + c.RevocationReason + ")"
		}
		fmt.Fprintln(a.stdout, line)
	}
	if d.Status != "active" {
		return fmt.Errorf("agent %s is %s", d.Name, d.Status)
	}
	return nil
}

// printLocalCert shows the local certificate; an error when it is not valid now.
func (a *app) printLocalCert(certFile, chainFile string) error {
	leaf, chain, err := agent.LoadCertificate(certFile, chainFile)
	if err != nil {
		return err
	}
	now := a.now()
	id := "(none)"
	if len(leaf.URIs) > 0 {
		id = leaf.URIs[0].String()
	}
	fmt.Fprintf(a.stdout, "certificate: %s\nidentity: %s\nserial: %s\nfingerprint SHA-256: %s\nnot before: %s\nnot after: %s\nintermediates: %d\n",
		certFile, id, ca.FormatSerial(leaf.SerialNumber), ca.Fingerprint(leaf),
		leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), len(chain))
	switch {
	case now.Before(leaf.NotBefore):
		fmt.Fprintln(a.stdout, "validity: not yet valid")
		return fmt.Errorf("%s is not valid before %s", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	case !now.Before(leaf.NotAfter):
		fmt.Fprintln(a.stdout, "validity: expired")
		return fmt.Errorf("%s expired at %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	left := leaf.NotAfter.Sub(now)
	pct := int(math.Round(100 * float64(left) / float64(life)))
	fmt.Fprintf(a.stdout, "validity: valid, %s left (%d%% of its lifetime)\n", left.Round(time.Second), pct)
	return nil
}

func runAgentRevoke(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("agent revoke", "agent revoke --reason REASON --server URL --api-key-file FILE (--name NAME | --cert CERT)",
		`Revoke the agent's certificate with the owner's API key. REASON is an RFC
5280 reason name: `+strings.Join(revocationReasons(), ", ")+`.
Revocation is final: the agent can no longer renew, and 'atr verify' fails
for its certificates.

`+exitStatusHelp,
		`atr agent revoke --name billing-bot.acme --reason keyCompromise \
    --server https://127.0.0.1:8443 --ca-bundle ./var/ca/bundle.pem --api-key-file team.apikey`)
	var o agentOpts
	o.bind(fs, a.lookupEnv, afServer|afCABundle|afCert|afAPIKey|afName)
	reason := fs.String("reason", "", "RFC 5280 reason name (required)")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	if *reason == "" {
		return usagef("--reason is required (for example keyCompromise or cessationOfOperation)")
	}
	if _, err := ca.ReasonCode(*reason); err != nil {
		return usagef("--reason %q: %v", *reason, err)
	}
	name, err := o.resolveName()
	if err != nil {
		return err
	}
	apiKey, err := o.readAPIKey()
	if err != nil {
		return err
	}
	if apiKey == "" {
		return usagef("--api-key-file (ATR_API_KEY_FILE) or ATR_API_KEY is required")
	}
	c, err := o.newClient(apiKey, nil)
	if err != nil {
		return err
	}
	ag, err := c.Revoke(ctx, name, *reason)
	if err != nil {
		return explain("revoking "+name, err)
	}
	fmt.Fprintf(a.stdout, "revoked agent %s (reason %s); status: %s\n", ag.Name, *reason, ag.Status)
	return nil
}
