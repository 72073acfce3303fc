package main

// agent.go is the agent side of ATR: `atr agent keygen | register | renew |
// status | revoke`. The private key is generated here and never leaves the
// machine; only CSRs travel. Every file is written atomically (a temporary
// file in the same directory, fsync, rename or link, fsync of the
// directory), so that no reader ever sees a half-written key or certificate.
//
// Files an agent keeps (paths are flags, each with an ATR_* twin):
//
//	--key   KEY    private key, PKCS#8 PEM, mode 0600 (ATR_AGENT_KEY)
//	--cert  CERT   the agent's certificate, PEM leaf only (ATR_AGENT_CERT)
//	--chain CHAIN  the intermediates (ATR_AGENT_CHAIN); default: next to the
//	               certificate, CERT with ".pem" replaced by ".chain.pem"
//	               (agent.pem → agent.chain.pem; agent.crt → agent.crt.chain.pem)
//	KEY.next       the staged key of a renewal in progress (see renewOnce)

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/apikey"
)

// Agent file limits and modes.
const (
	agentKeyMode      os.FileMode = 0o600
	agentCertMode     os.FileMode = 0o644
	agentMaxKeyFile               = 64 << 10
	agentMaxCertFile              = 1 << 20
	agentMaxAPIKey                = 4 << 10
	agentStagedSuffix             = ".next"

	// Renewal schedule: at renewFraction of the lifetime, ±renewJitter of the
	// lifetime; retries back off exponentially from retryInitial.
	renewFraction = 2.0 / 3.0
	renewJitter   = 0.10
	retryInitial  = 2 * time.Second
)

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
	}, map[string]string{
		"keygen":   "generate the agent's private key locally (mode 0600)",
		"register": "register the agent with a locally built CSR (API key)",
		"renew":    "rotate the certificate over mTLS with a new key; --watch renews forever",
		"status":   "show the agent (API key) or the local certificate's validity",
		"revoke":   "revoke the agent's certificate (API key)",
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

// chainPath is where the intermediates of cert live.
func chainPath(cert, override string) string {
	if override != "" {
		return override
	}
	if strings.HasSuffix(cert, ".pem") {
		return strings.TrimSuffix(cert, ".pem") + ".chain.pem"
	}
	return cert + ".chain.pem"
}

func (o *agentOpts) chainFile() string { return chainPath(o.cert, o.chain) }

// receiptPath is where the log receipt of the certificate in cert is kept: CERT
// with ".pem" replaced by ".receipt.json" (agent.pem → agent.receipt.json).
func receiptPath(cert string) string {
	return strings.TrimSuffix(cert, ".pem") + ".receipt.json"
}

// writeReceipt keeps the receipt of a fresh certificate beside it (for
// `atr verify --receipt`); an answer without one removes a stale file.
func writeReceipt(cert string, receipt []byte) error {
	path := receiptPath(cert)
	if len(receipt) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return writeAtomic(path, append(append([]byte(nil), receipt...), '\n'), agentCertMode, true)
}

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
		data, err := readSecretFile(o.apiKeyFile, agentMaxAPIKey)
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
	data, err := readFileCapped(path, agentMaxCertFile)
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

// explain renders err for the terminal; a server error shows its stable code,
// HTTP status and request ID so that an operator can find it in the logs.
func explain(what string, err error) error {
	var ce *client.Error
	if errors.As(err, &ce) {
		msg := fmt.Sprintf("%s: the server refused: %s (HTTP %d): %s", what, ce.Code, ce.Status, ce.Message)
		if ce.RequestID != "" {
			msg += " [request ID " + ce.RequestID + "]"
		}
		return &serverError{msg: msg, err: ce}
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// serverError is an error answered by the server, already explained.
type serverError struct {
	msg string
	err *client.Error
}

func (e *serverError) Error() string { return e.msg }
func (e *serverError) Unwrap() error { return e.err }

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

// ---- files -----------------------------------------------------------------

// readFileCapped reads at most max bytes of path, refusing larger files.
func readFileCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return data, nil
}

// readSecretFile reads a secret (private key, API key), refusing a file that
// group or others may access, as ssh does.
func readSecretFile(path string, max int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: a secret must not be accessible by group or others (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	return readFileCapped(path, max)
}

// writeAtomic writes data to path so that path holds either its old content
// or all of data, never a part: a temporary file in the same directory is
// written with mode, fsynced and closed, then renamed over path (replace) or
// hard-linked to path, which fails if path exists (no replace: refusing to
// overwrite without a check-then-create race). The directory is fsynced so
// the new name survives a crash. The temporary file never outlives the call.
func writeAtomic(path string, data []byte, mode os.FileMode, replace bool) (err error) {
	if path == "" {
		return errors.New("writing: empty path")
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = fmt.Errorf("writing %s: removing the temporary file: %w", path, rerr)
		}
	}()
	werr := f.Chmod(mode)
	if werr == nil {
		_, werr = f.Write(data)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("writing %s: %w", path, werr)
	}
	if replace {
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	} else if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; refusing to overwrite it: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return syncDir(dir)
}

// renameDurable renames old to new and fsyncs the directory.
func renameDurable(oldPath, newPath string) error {
	if err := os.Rename(oldPath, newPath); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", oldPath, newPath, err)
	}
	return syncDir(filepath.Dir(newPath))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// ---- keys ------------------------------------------------------------------

// keyTypes lists the key types keygen offers; the server also accepts RSA keys
// brought along.
const keyTypes = "p256, p384, ed25519"

func generateAgentKey(typ string) (crypto.Signer, error) {
	switch typ {
	case "p256", "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, usagef("--type %q: want one of %s", typ, keyTypes)
}

// agentKeyType names k's type as --type does ("rsa" for RSA keys).
func agentKeyType(k crypto.Signer) string {
	switch p := k.Public().(type) {
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256():
			return "p256"
		case elliptic.P384():
			return "p384"
		}
	case ed25519.PublicKey:
		return "ed25519"
	case *rsa.PublicKey:
		return "rsa"
	}
	return "unknown"
}

func marshalAgentKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encoding the private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseAgentKey parses one PEM private key: PKCS#8, SEC 1 ("EC PRIVATE KEY")
// or PKCS#1 ("RSA PRIVATE KEY"), and applies the server's key policy.
func parseAgentKey(data []byte) (crypto.Signer, error) {
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM private key found")
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("trailing data after the private key")
	}
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing the private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", k)
	}
	if err := ca.CheckPublicKey(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}

func loadAgentKey(path string) (crypto.Signer, error) {
	data, err := readSecretFile(path, agentMaxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the private key: %w", err)
	}
	k, err := parseAgentKey(data)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	return k, nil
}

func spkiFingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "?"
	}
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
}

func certFingerprint(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return hex.EncodeToString(h[:])
}

// keyMatches reports whether cert certifies k's public key.
func keyMatches(k crypto.Signer, cert *x509.Certificate) bool {
	pub, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// buildCSR returns a PEM CSR over k. It carries no subject and no SANs: the
// server builds the certificate from its profile and the CSR's key only.
func buildCSR(k crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		return nil, fmt.Errorf("building the CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ---- certificates ----------------------------------------------------------

// parseCertsPEM parses PEM certificates strictly (ca.ParseCertificatesPEM),
// allowing long bundles.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	return ca.ParseCertificatesPEM(data, 100)
}

// loadAgentCert reads the certificate file (leaf first, possibly followed by
// intermediates) and the chain file when it exists.
func loadAgentCert(certFile, chainFile string) (leaf *x509.Certificate, chain []*x509.Certificate, err error) {
	data, err := readFileCapped(certFile, agentMaxCertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the certificate: %w", err)
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", certFile, err)
	}
	leaf, chain = certs[0], certs[1:]
	if chainFile != "" {
		data, err := readFileCapped(chainFile, agentMaxCertFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, nil, fmt.Errorf("reading the chain: %w", err)
		case len(strings.TrimSpace(string(data))) > 0:
			more, err := parseCertsPEM(data)
			if err != nil {
				return nil, nil, fmt.Errorf("chain %s: %w", chainFile, err)
			}
			chain = append(chain, more...)
		}
	}
	return leaf, chain, nil
}

// agentNameFromCert extracts name and trust domain from the certificate's one
// spiffe://<td>/agent/<name> URI SAN.
func agentNameFromCert(c *x509.Certificate) (name, trustDomain string, err error) {
	if len(c.URIs) != 1 {
		return "", "", fmt.Errorf("certificate has %d URI SANs, want exactly one SPIFFE ID", len(c.URIs))
	}
	u := c.URIs[0]
	if u.Scheme != "spiffe" || u.Host == "" || !strings.HasPrefix(u.Path, "/agent/") {
		return "", "", fmt.Errorf("certificate URI SAN %q is not spiffe://<trust-domain>/agent/<name>", u.String())
	}
	name = strings.TrimPrefix(u.Path, "/agent/")
	if n, err := ca.AgentName(c, u.Host); err != nil || n != name {
		return "", "", fmt.Errorf("certificate URI SAN %q is not a valid agent identity", u.String())
	}
	return name, u.Host, nil
}

// issuedFiles validates an issuance answer against the key it was requested
// for and returns the PEM to write.
func issuedFiles(k crypto.Signer, c *client.Certificate, wantName string) (leaf *x509.Certificate, leafPEM, chainPEM []byte, err error) {
	certs, err := ca.ParseCertificatesPEM([]byte(c.Certificate), 1)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("the server's certificate: %w", err)
	}
	leaf = certs[0]
	if !keyMatches(k, leaf) {
		return nil, nil, nil, errors.New("the server returned a certificate for another key")
	}
	if name, _, err := agentNameFromCert(leaf); err != nil {
		return nil, nil, nil, fmt.Errorf("the server's certificate: %w", err)
	} else if wantName != "" && name != wantName {
		return nil, nil, nil, fmt.Errorf("the server's certificate names agent %q, want %q", name, wantName)
	}
	var chain []*x509.Certificate
	if strings.TrimSpace(c.Chain) != "" {
		if chain, err = parseCertsPEM([]byte(c.Chain)); err != nil {
			return nil, nil, nil, fmt.Errorf("the server's chain: %w", err)
		}
		if err := leaf.CheckSignatureFrom(chain[0]); err != nil {
			return nil, nil, nil, fmt.Errorf("the server's chain does not sign the certificate: %w", err)
		}
	}
	return leaf, ca.EncodeCertificatesPEM(leaf), ca.EncodeCertificatesPEM(chain...), nil
}

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
	data, err := marshalAgentKey(k)
	if err != nil {
		return err
	}
	if err := writeAtomic(o.key, data, agentKeyMode, false); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "wrote %s private key to %s (mode 0600)\npublic key SHA-256: %s\n", agentKeyType(k), o.key, spkiFingerprint(k.Public()))
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
	k, err := loadAgentKey(o.key)
	if err != nil {
		return err
	}
	c, err := o.newClient(apiKey, nil)
	if err != nil {
		return err
	}
	csr, err := buildCSR(k)
	if err != nil {
		return err
	}
	md2 := map[string]string(md)
	if len(md2) == 0 {
		md2 = nil
	}
	issued, err := c.Register(ctx, client.RegisterRequest{Name: name, CSR: string(csr), Capabilities: caps, Metadata: md2})
	if err != nil {
		return explain("registering "+name, err)
	}
	leaf, leafPEM, chainPEM, err := issuedFiles(k, issued, name)
	if err != nil {
		return err
	}
	if err := writeAtomic(o.chainFile(), chainPEM, agentCertMode, true); err != nil {
		return err
	}
	if err := writeAtomic(o.cert, leafPEM, agentCertMode, *force); err != nil {
		return err
	}
	if err := writeReceipt(o.cert, issued.Receipt); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "registered agent %s (owner %s)\nserial: %s\nfingerprint SHA-256: %s\nlog index: %d\nvalid: %s to %s\ncertificate: %s\nchain: %s\n",
		name, issued.Owner, showSerial(issued.Serial), certFingerprint(leaf), issued.LogIndex,
		leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), o.cert, o.chainFile())
	if len(issued.Receipt) > 0 {
		fmt.Fprintf(a.stdout, "log receipt: %s\n", receiptPath(o.cert))
	}
	return nil
}

// ---- renew -----------------------------------------------------------------

// rotator is what renewal needs of the API: the rotation, and the public
// status check that explains a refusal.
type rotator interface {
	Rotate(ctx context.Context, name string, csrPEM []byte) (*client.Certificate, error)
	Verify(ctx context.Context, certPEM, chainPEM []byte) (*client.VerifyResult, error)
}

// renewer renews one agent's certificate in place.
type renewer struct {
	keyFile, certFile, chainFile string
	name                         string // "" → from the certificate
	keyType                      string // "" → same type as the current key
	// dial returns a client presenting cert (mTLS, no API key).
	dial  func(cert tls.Certificate) (rotator, error)
	hooks []func(ctx context.Context, leaf *x509.Certificate) error
	log   *logrus.Entry
	now   func() time.Time
	// renewBefore, when positive, renews that long before expiry instead of
	// at 2/3 of the lifetime (--renew-before).
	renewBefore time.Duration
}

func (r *renewer) stagedKey() string { return r.keyFile + agentStagedSuffix }

// recover finishes or discards a renewal a crash interrupted. A staged key
// (KEY.next) that the certificate on disk certifies means the crash came
// after the certificate was written: the key is moved into place. Any other
// staged key belongs to a renewal that never wrote its certificate and is
// removed (the key and certificate on disk still match).
func (r *renewer) recover() error {
	staged := r.stagedKey()
	data, err := readSecretFile(staged, agentMaxKeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("staged key: %w", err)
	}
	k, kerr := parseAgentKey(data)
	leaf, _, cerr := loadAgentCert(r.certFile, "")
	if kerr == nil && cerr == nil && keyMatches(k, leaf) {
		r.log.WithField("key", r.keyFile).Warn("finishing an interrupted renewal: moving the staged key into place")
		return renameDurable(staged, r.keyFile)
	}
	r.log.WithField("staged", staged).Warn("removing the staged key of an interrupted renewal that never wrote its certificate")
	if err := os.Remove(staged); err != nil {
		return fmt.Errorf("removing the staged key: %w", err)
	}
	return syncDir(filepath.Dir(staged))
}

// renewOnce rotates the certificate over mTLS with a new key. The order
// guarantees that a crash never leaves a certificate on disk whose key is
// lost, and that KEY and CERT match before and after:
//
//  1. finish or discard a previous interrupted renewal (recover);
//  2. load KEY, CERT and CHAIN, which match; they authenticate the request;
//  3. generate the new key and write it to KEY.next (0600, atomic, fsync);
//  4. build the CSR and rotate (POST /v1/agents/{name}/rotate over mTLS);
//     on failure KEY.next is removed and nothing else changed;
//  5. check the new certificate certifies the new key and names the agent;
//  6. write CHAIN, then CERT (each atomically: temporary file, fsync, rename);
//  7. rename KEY.next over KEY and fsync the directory;
//  8. run the reload hooks (--exec, --signal).
//
// Between 6 and 7 (one rename) CERT is new and KEY old; a crash there is
// repaired by step 1 of the next run, which finds that KEY.next matches CERT.
// Programs that read the files should reload on the hook, which runs only once
// both are in place.
func (r *renewer) renewOnce(ctx context.Context) (*x509.Certificate, error) {
	if err := r.recover(); err != nil {
		return nil, err
	}
	key, err := loadAgentKey(r.keyFile)
	if err != nil {
		return nil, err
	}
	leaf, chain, err := loadAgentCert(r.certFile, r.chainFile)
	if err != nil {
		return nil, err
	}
	if !keyMatches(key, leaf) {
		return nil, fmt.Errorf("%s does not certify the key in %s", r.certFile, r.keyFile)
	}
	name := r.name
	certName, _, err := agentNameFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.certFile, err)
	}
	if name == "" {
		name = certName
	} else if name != certName {
		return nil, fmt.Errorf("%s is the certificate of agent %q, not %q", r.certFile, certName, name)
	}
	if now := r.now(); !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("the certificate expired at %s; renewal over mTLS is impossible: register again with an API key", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: leaf, Certificate: [][]byte{leaf.Raw}}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}

	typ := r.keyType
	if typ == "" {
		typ = agentKeyType(key)
		if typ == "rsa" || typ == "unknown" {
			typ = "p256"
		}
	}
	newKey, err := generateAgentKey(typ)
	if err != nil {
		return nil, err
	}
	keyPEM, err := marshalAgentKey(newKey)
	if err != nil {
		return nil, err
	}
	staged := r.stagedKey()
	if err := writeAtomic(staged, keyPEM, agentKeyMode, true); err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			os.Remove(staged)
		}
	}()

	csr, err := buildCSR(newKey)
	if err != nil {
		return nil, err
	}
	c, err := r.dial(tc)
	if err != nil {
		return nil, err
	}
	issued, err := c.Rotate(ctx, name, csr)
	if err != nil {
		return nil, explainRenewal(ctx, c, name, leaf, chain, err)
	}
	newLeaf, leafPEM, chainPEM, err := issuedFiles(newKey, issued, name)
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(r.chainFile, chainPEM, agentCertMode, true); err != nil {
		return nil, err
	}
	if err := writeAtomic(r.certFile, leafPEM, agentCertMode, true); err != nil {
		return nil, err
	}
	committed = true // from here on recover() completes the renewal
	if err := writeReceipt(r.certFile, issued.Receipt); err != nil {
		r.log.WithError(err).Warn("could not keep the log receipt beside the certificate")
	}
	if err := renameDurable(staged, r.keyFile); err != nil {
		return nil, err
	}
	r.log.WithFields(logrus.Fields{"agent": name, "serial": showSerial(issued.Serial), "not_after": newLeaf.NotAfter.UTC().Format(time.RFC3339), "log_index": issued.LogIndex}).Info("certificate renewed")
	for _, h := range r.hooks {
		if err := h(ctx, newLeaf); err != nil {
			r.log.WithError(err).Warn("reload hook failed")
		}
	}
	return newLeaf, nil
}

// explainRenewal renders a refused renewal. The server answers any
// certificate it will not accept for mTLS with the same 401, so on a 401 the
// certificate's status is asked through the public verify endpoint (which
// tells anyone who holds the certificate): a revoked or superseded
// certificate is named as such rather than "unauthenticated".
func explainRenewal(ctx context.Context, c rotator, name string, leaf *x509.Certificate, chain []*x509.Certificate, err error) error {
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		return explain("renewing "+name, err)
	}
	res, verr := c.Verify(ctx, ca.EncodeCertificatesPEM(leaf), ca.EncodeCertificatesPEM(chain...))
	if verr != nil || res.Verified {
		return explain("renewing "+name, err)
	}
	serial := ca.FormatSerial(leaf.SerialNumber)
	var msg string
	switch res.Reason {
	case "revoked":
		msg = fmt.Sprintf("renewing %s: the server refused: the certificate (serial %s) is revoked; a revoked certificate cannot be renewed: register the agent again with an API key", name, serial)
	case "superseded":
		msg = fmt.Sprintf("renewing %s: the server refused: the certificate (serial %s) was superseded by a newer one; renew with the agent's current certificate", name, serial)
	case "issuer_revoked":
		msg = fmt.Sprintf("renewing %s: the server refused: the intermediate CA that issued the certificate (serial %s) was revoked by its root; register the agent again with an API key", name, serial)
	case "unknown_certificate", "untrusted_chain":
		msg = fmt.Sprintf("renewing %s: the server refused: it does not know the certificate (serial %s): check --server and --ca-bundle", name, serial)
	default:
		return explain("renewing "+name, err)
	}
	if ce.RequestID != "" {
		msg += " [request ID " + ce.RequestID + "]"
	}
	return &serverError{msg: msg, err: ce}
}

// renewalDelay is how long to wait at now before renewing a certificate valid
// from notBefore to notAfter, never negative; j in [0, 1) picks the jitter.
// By default (renewBefore 0) the renewal point is renewFraction (2/3) of the
// lifetime, moved by up to ±renewJitter (10%) of the lifetime: the latest
// point, 2/3+1/10, is always before expiry. With renewBefore > 0 the point is
// notAfter-renewBefore, moved by up to ±10% of the time from notBefore to it,
// and never later than notAfter.
func renewalDelay(notBefore, notAfter, now time.Time, j float64, renewBefore time.Duration) time.Duration {
	life := notAfter.Sub(notBefore)
	var at time.Time
	if renewBefore > 0 {
		point := notAfter.Add(-renewBefore)
		span := max(point.Sub(notBefore), 0)
		at = point.Add(time.Duration(math.Round(float64(span) * renewJitter * (2*j - 1))))
		if at.After(notAfter) {
			at = notAfter
		}
	} else {
		at = notBefore.Add(time.Duration(math.Round(float64(life) * (renewFraction + renewJitter*(2*j-1)))))
	}
	return max(at.Sub(now), 0)
}

// retryable reports whether a failed renewal may succeed later: transport
// errors, 408, 409, 429 and 5xx; not refusals such as a revoked agent.
func retryable(err error) bool {
	var ce *client.Error
	if !errors.As(err, &ce) {
		var ue *usageError
		return !errors.As(err, &ue)
	}
	switch {
	case ce.Status == http.StatusRequestTimeout, ce.Status == http.StatusConflict, ce.Status == http.StatusTooManyRequests:
		return true
	case ce.Status >= 500:
		return true
	}
	return false
}

// watch renews forever: at about 2/3 of each certificate's lifetime, with
// jitter, retrying failures with exponential backoff (capped at maxBackoff and
// by the Retry-After the server sends) until ctx is cancelled (nil) or a
// renewal is refused for good or the certificate expires (an error).
func (r *renewer) watch(ctx context.Context, maxBackoff time.Duration, sleep func(context.Context, time.Duration) error) error {
	if err := r.recover(); err != nil {
		return err
	}
	for {
		leaf, _, err := loadAgentCert(r.certFile, "")
		if err != nil {
			return err
		}
		d := renewalDelay(leaf.NotBefore, leaf.NotAfter, r.now(), mrand.Float64(), r.renewBefore)
		r.log.WithFields(logrus.Fields{"serial": ca.FormatSerial(leaf.SerialNumber), "not_after": leaf.NotAfter.UTC().Format(time.RFC3339), "renew_in": d.Round(time.Second).String()}).Info("next renewal scheduled")
		if err := sleep(ctx, d); err != nil {
			return nil // cancelled
		}
		backoff := retryInitial
		for {
			_, err := r.renewOnce(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			if !retryable(err) {
				return err
			}
			if !r.now().Before(leaf.NotAfter) {
				return fmt.Errorf("the certificate expired before it could be renewed (last error: %w)", err)
			}
			wait := backoff
			var ce *client.Error
			if errors.As(err, &ce) && ce.RetryAfter > wait {
				wait = ce.RetryAfter
			}
			wait = min(wait, maxBackoff, max(leaf.NotAfter.Sub(r.now())/2, time.Second))
			r.log.WithError(err).WithField("retry_in", wait.String()).Warn("renewal failed; retrying")
			if err := sleep(ctx, wait); err != nil {
				return nil
			}
			backoff = min(2*backoff, maxBackoff)
		}
	}
}

// sleepCtx waits d or until ctx is done (then it returns ctx.Err()).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

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
		data, err := readFileCapped(t.pidFile, 64)
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
	r := &renewer{
		keyFile: o.key, certFile: o.cert, chainFile: o.chainFile(), name: name, keyType: *typ,
		log: newLog(a.stderr, *logLevel).WithField("component", "agent-renew"),
		now: a.now, renewBefore: *renewBefore,
		dial: func(cert tls.Certificate) (rotator, error) {
			return o.newClient("", &cert)
		},
	}
	if *execCmd != "" {
		cmdline := *execCmd
		r.hooks = append(r.hooks, func(ctx context.Context, leaf *x509.Certificate) error {
			cmd := exec.CommandContext(ctx, "/bin/sh", "-c", cmdline)
			cmd.Env = append(os.Environ(), "ATR_AGENT_CERT="+r.certFile, "ATR_AGENT_KEY="+r.keyFile,
				"ATR_AGENT_CHAIN="+r.chainFile, "ATR_AGENT_SERIAL="+ca.FormatSerial(leaf.SerialNumber))
			cmd.Stdout, cmd.Stderr = a.stderr, a.stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("--exec %q: %w", cmdline, err)
			}
			return nil
		})
	}
	for _, t := range targets {
		r.hooks = append(r.hooks, func(context.Context, *x509.Certificate) error { return t.send() })
	}
	if *watch {
		return r.watch(ctx, *maxBackoff, sleepCtx)
	}
	leaf, err := r.renewOnce(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "renewed: serial %s, valid until %s\nfingerprint SHA-256: %s\ncertificate: %s\nkey: %s\nchain: %s\n",
		ca.FormatSerial(leaf.SerialNumber), leaf.NotAfter.UTC().Format(time.RFC3339), certFingerprint(leaf), r.certFile, r.keyFile, r.chainFile)
	if _, err := os.Stat(receiptPath(r.certFile)); err == nil {
		fmt.Fprintf(a.stdout, "log receipt: %s\n", receiptPath(r.certFile))
	}
	return nil
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
	leaf, _, err := loadAgentCert(o.cert, "")
	if err != nil {
		return "", err
	}
	n, _, err := agentNameFromCert(leaf)
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
	leaf, chain, err := loadAgentCert(certFile, chainFile)
	if err != nil {
		return err
	}
	now := a.now()
	id := "(none)"
	if len(leaf.URIs) > 0 {
		id = leaf.URIs[0].String()
	}
	fmt.Fprintf(a.stdout, "certificate: %s\nidentity: %s\nserial: %s\nfingerprint SHA-256: %s\nnot before: %s\nnot after: %s\nintermediates: %d\n",
		certFile, id, ca.FormatSerial(leaf.SerialNumber), certFingerprint(leaf),
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
