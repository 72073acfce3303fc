package main

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// Default labels and lifetimes of the ceremonies.
const (
	defaultRootLabel      = "atr-root"
	defaultIssuingLabel   = "atr-issuing-1"
	defaultRootCN         = "ATR Root CA"
	defaultIssuingCN      = "ATR Issuing CA"
	defaultRootLifetime   = ca.DefaultRootLifetime
	defaultIssuingLife    = ca.DefaultIntermediateLifetime
	maxIssuingLifetime    = ca.MaxIntermediateLifetime
	ceremonyTimeFormat    = "20060102T150405Z"
	transcriptDirName     = "ceremonies"
	transcriptFormatVer   = 1
	caDirName             = "ca"
	rootPEMName           = "root.pem"
	intermediatePEMName   = "intermediate.pem"
	bundlePEMName         = "bundle.pem"
	logKeyPEMName         = "log-key.pem"
	vrfKeyPEMName         = "vrf-key.pem"
	jwtKeyPEMName         = "jwt-key.pem"
	cardKeyPEMName        = "card-key.pem"
	defaultRootAlgorithm  = "ecdsa-p384"
	defaultIssuingAlgo    = "ecdsa-p256"
	ceremonyDirMode       = 0o700
	publicFileMode        = 0o644
	transcriptFileMode    = 0o600
	publicDirMode         = 0o755
	ceremonyRootSummary   = "generate the root key on the root token and self-sign it"
	ceremonyIntSummary    = "generate the issuing key on the online token and certify it with the root"
	ceremonyRotateSummary = "generate a new issuing key (new label), certified by the root"
	ceremonyLogSummary    = "generate the transparency-log key (ECDSA P-256) on the online token"
	ceremonyVRFSummary    = "generate the name-index VRF key (RSA-3072, or --algorithm rsa-2048) on the online token"
	ceremonyShowSummary   = "list the objects on a token with their attributes (read-only)"
	ceremonyJWTSummary    = "generate the JWT-SVID signing key (ECDSA P-256) on the online token"
	ceremonyCardSummary   = "generate the A2A agent-card signing key (ECDSA P-256) on the online token"
)

func runCeremony(ctx context.Context, a *app, args []string) error {
	return a.subcommand(ctx, "ceremony", map[string]func(context.Context, *app, []string) error{
		"root":                runCeremonyRoot,
		"intermediate":        runCeremonyIntermediate,
		"rotate-intermediate": runCeremonyRotate,
		"log-key":             runCeremonyLogKey,
		"log-key-ed25519":     runCeremonyLogKeyEd25519,
		"vrf-key":             runCeremonyVRFKey,
		"jwt-key":             runCeremonyJWTKey,
		"card-key":            runCeremonyCardKey,
		"root-crl":            runCeremonyRootCRL,
		"show":                runCeremonyShow,
	}, map[string]string{
		"root":                ceremonyRootSummary,
		"intermediate":        ceremonyIntSummary,
		"rotate-intermediate": ceremonyRotateSummary,
		"log-key":             ceremonyLogSummary,
		"log-key-ed25519":     ceremonyLogEd25519Summary,
		"vrf-key":             ceremonyVRFSummary,
		"jwt-key":             ceremonyJWTSummary,
		"card-key":            ceremonyCardSummary,
		"root-crl":            ceremonyRootCRLSummary,
		"show":                ceremonyShowSummary,
	}, args)
}

// ceremonyOpts are the flags every key-creating ceremony has.
type ceremonyOpts struct {
	operator  string
	ifMissing bool
	outDir    string
}

func (o *ceremonyOpts) bind(fs *flag.FlagSet, withIfMissing bool) {
	fs.StringVar(&o.operator, "operator", "", "operator name recorded in the transcript (default $USER)")
	fs.StringVar(&o.outDir, "out-dir", "", "directory for the public PEM outputs (default DATA_DIR/ca)")
	if withIfMissing {
		fs.BoolVar(&o.ifMissing, "if-missing", false, "succeed without changes when the key already exists (idempotent dev set-up)")
	}
}

// ceremony is one run of a ceremony and its transcript.
type ceremony struct {
	a    *app
	cfg  Config
	opts ceremonyOpts
	log  *logrus.Entry
	t    transcript
}

// transcript is the JSON record a ceremony leaves under DATA_DIR/ceremonies.
type transcript struct {
	Version     int       `json:"version"`
	Ceremony    string    `json:"ceremony"`
	Time        time.Time `json:"time"`
	Finished    time.Time `json:"finished"`
	Operator    string    `json:"operator"`
	Host        string    `json:"host"`
	Command     []string  `json:"command"`
	ATRVersion  string    `json:"atr_version"`
	Module      string    `json:"pkcs11_module"`
	TrustDomain string    `json:"trust_domain,omitempty"`
	// URINameConstraint records, for the intermediate ceremonies, whether
	// the new issuing CA certificate carries the URI name constraint.
	URINameConstraint *bool                   `json:"uri_name_constraint,omitempty"`
	Keys              []transcriptKey         `json:"keys"`
	Certificates      []transcriptCert        `json:"certificates"`
	Outputs           []transcriptOutput      `json:"outputs"`
	Tokens            map[string][]objectJSON `json:"tokens"`
}

type transcriptKey struct {
	Token           string `json:"token"`
	Label           string `json:"label"`
	URI             string `json:"uri"`
	Algorithm       string `json:"algorithm"`
	PublicKeySHA256 string `json:"public_key_sha256"`
}

type transcriptCert struct {
	Token     string    `json:"token"`
	Label     string    `json:"label"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	SHA256    string    `json:"sha256"`
}

type transcriptOutput struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

func (a *app) newCeremony(name string, cfg Config, opts ceremonyOpts) (*ceremony, error) {
	log := newLogger(a.stderr, cfg.LogLevel).WithField("ceremony", name)
	if err := a.useDevSoftHSMConf(cfg, log); err != nil {
		return nil, err
	}
	if opts.operator == "" {
		opts.operator, _ = a.lookupEnv("USER")
	}
	if opts.operator == "" {
		if u, err := user.Current(); err == nil {
			opts.operator = u.Username
		}
	}
	if opts.operator == "" {
		opts.operator = "unknown"
	}
	if opts.outDir == "" {
		opts.outDir = filepath.Join(cfg.DataDir, caDirName)
	}
	host, _ := os.Hostname()
	return &ceremony{a: a, cfg: cfg, opts: opts, log: log, t: transcript{
		Version:    transcriptFormatVer,
		Ceremony:   name,
		Time:       a.now().UTC(),
		Operator:   opts.operator,
		Host:       host,
		Command:    redactArgs(a.argv),
		ATRVersion: versionString(),
		Module:     cfg.PKCS11Module,
		Tokens:     map[string][]objectJSON{},
	}}, nil
}

// redactArgs returns the command line for the transcript. Secrets never come
// from argv, but a pkcs11: URI could still carry a pin-value: it is removed.
func redactArgs(argv []string) []string {
	const key = "pin-value="
	out := make([]string, len(argv))
	for i, s := range argv {
		var b strings.Builder
		for {
			j := strings.Index(strings.ToLower(s), key)
			if j < 0 {
				b.WriteString(s)
				break
			}
			b.WriteString(s[:j+len(key)])
			b.WriteString("REDACTED")
			s = s[j+len(key):]
			if k := strings.IndexAny(s, ";&?"); k >= 0 {
				s = s[k:]
			} else {
				s = ""
			}
		}
		out[i] = b.String()
	}
	return out
}

func (c *ceremony) recordKey(token string, s keyOnToken, alg string) error {
	fp, err := ca.PublicKeyFingerprint(s.Public())
	if err != nil {
		return err
	}
	c.t.Keys = append(c.t.Keys, transcriptKey{Token: token, Label: s.URI().Object, URI: s.URI().String(), Algorithm: alg, PublicKeySHA256: fp})
	return nil
}

// keyOnToken is what a transcript records of a key: *hsm.Signer and
// *hsm.Ed25519Signer.
type keyOnToken interface {
	Public() crypto.PublicKey
	URI() hsm.URI
}

func (c *ceremony) recordCert(token, label string, cert *x509.Certificate) {
	c.t.Certificates = append(c.t.Certificates, transcriptCert{
		Token: token, Label: label, Subject: cert.Subject.String(), Issuer: cert.Issuer.String(),
		Serial: ca.FormatSerial(cert.SerialNumber), NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), SHA256: ca.Fingerprint(cert),
	})
}

// output writes a public file under the output directory and records its hash.
func (c *ceremony) output(name string, data []byte) error {
	if err := os.MkdirAll(c.opts.outDir, publicDirMode); err != nil {
		return fmt.Errorf("creating %s: %w", c.opts.outDir, err)
	}
	p := filepath.Join(c.opts.outDir, name)
	if old, err := os.ReadFile(p); err == nil && string(old) != string(data) {
		c.log.WithFields(logrus.Fields{"file": p, "old_sha256": sha256Hex(old)}).Warn("replacing an output file of an earlier ceremony")
	}
	if err := agent.WriteFile(p, data, publicFileMode, true); err != nil {
		return err
	}
	c.t.Outputs = append(c.t.Outputs, transcriptOutput{Path: p, SHA256: sha256Hex(data)})
	return nil
}

// listToken records the token's objects in the transcript.
func (c *ceremony) listToken(ctx context.Context, label string, tok *hsm.Token) error {
	objs, err := tok.Objects(ctx)
	if err != nil {
		return fmt.Errorf("listing the objects on token %q: %w", label, err)
	}
	c.t.Tokens[label] = objectsJSON(objs)
	return nil
}

// finish writes the transcript (never replacing an existing one) and prints
// its path.
func (c *ceremony) finish() error {
	c.t.Finished = c.a.now().UTC()
	dir := filepath.Join(c.cfg.DataDir, transcriptDirName)
	if err := os.MkdirAll(dir, ceremonyDirMode); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	data, err := json.MarshalIndent(c.t, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the transcript: %w", err)
	}
	base := c.t.Time.Format(ceremonyTimeFormat) + "-" + c.t.Ceremony
	p := filepath.Join(dir, base+".json")
	for i := 2; ; i++ {
		err = agent.WriteFile(p, append(data, '\n'), transcriptFileMode, false)
		if !errors.Is(err, os.ErrExist) || i > 99 {
			break
		}
		p = filepath.Join(dir, fmt.Sprintf("%s-%d.json", base, i))
	}
	if err != nil {
		return fmt.Errorf("writing the transcript: %w", err)
	}
	c.log.WithField("transcript", p).Info("ceremony complete")
	fmt.Fprintf(c.a.stdout, "transcript: %s\n", p)
	return nil
}

// checkAlgorithm checks an --algorithm flag against hsm.KeyAlgorithms.
func checkAlgorithm(alg string) error {
	if _, err := hsm.ParseKeyAlgorithm(alg); err != nil {
		return usagef("unknown key algorithm %q (ecdsa-p256, ecdsa-p384, rsa-3072, rsa-4096)", alg)
	}
	return nil
}

// certOnToken returns the certificate labelled label on the token, if any.
func certOnToken(ctx context.Context, tok *hsm.Token, label string) (*hsm.TokenCertificate, error) {
	certs, err := tok.Certificates(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing certificates: %w", err)
	}
	for i := range certs {
		if certs[i].Label == label {
			return &certs[i], nil
		}
	}
	return nil, nil
}

// existingKey handles hsm.ErrExists from GenerateKey: with --if-missing and a
// complete earlier ceremony (the key's certificate is on the token) it
// reports done=true; otherwise it refuses.
func (c *ceremony) existingKey(ctx context.Context, tok *hsm.Token, token, label string, needCert bool) (*hsm.TokenCertificate, error) {
	if !c.opts.ifMissing {
		return nil, fmt.Errorf("a key labelled %q already exists on token %q; refusing to overwrite it (choose another --label, or --if-missing to accept the existing one): %w", label, token, hsm.ErrExists)
	}
	if !needCert {
		return nil, nil
	}
	tc, err := certOnToken(ctx, tok, label)
	if err != nil {
		return nil, err
	}
	if tc == nil {
		return nil, fmt.Errorf("key %q exists on token %q without its certificate (an interrupted ceremony?); refusing to reuse it: run the ceremony with a new --label: %w", label, token, hsm.ErrExists)
	}
	return tc, nil
}

func runCeremonyRoot(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("ceremony root", "ceremony root [flags]",
		`Generate the root CA key on the offline root token (never extractable),
self-sign it with the root profile, import the root certificate onto the root
token and write DATA_DIR/ca/root.pem. Refuses to run over an existing key.
A transcript is written to DATA_DIR/ceremonies/.`,
		`SOFTHSM2_CONF=./var/softhsm2.conf ATR_PKCS11_ROOT_PIN_FILE=./var/pin \
  atr ceremony root --data-dir ./var --cn "Example Agent Root CA" --operator alice`)
	var (
		opts     ceremonyOpts
		label    = fs.String("label", defaultRootLabel, "label of the root key and certificate on the root token")
		cn       = fs.String("cn", defaultRootCN, "common name of the root certificate")
		lifetime = fs.Duration("lifetime", defaultRootLifetime, "root certificate lifetime")
		alg      = fs.String("algorithm", defaultRootAlgorithm, "key algorithm: ecdsa-p256, ecdsa-p384, rsa-3072, rsa-4096")
	)
	opts.bind(fs, true)
	cfg, err := a.loadConfig(fs, optCommon|optRoot, args)
	if err != nil {
		return err
	}
	if err := checkAlgorithm(*alg); err != nil {
		return err
	}
	c, err := a.newCeremony("root", cfg, opts)
	if err != nil {
		return err
	}
	tok, err := openRootToken(ctx, cfg, c.log)
	if err != nil {
		return err
	}
	defer tok.Close()

	// Step 1: the key, generated on the token (sensitive, never extractable).
	signer, err := tok.GenerateKey(ctx, *label, hsm.KeyAlgorithm(*alg))
	if errors.Is(err, hsm.ErrExists) {
		tc, err := c.existingKey(ctx, tok, cfg.RootToken, *label, true)
		if err != nil {
			return err
		}
		c.log.WithField("label", *label).Info("root key and certificate already on the token; nothing to do (--if-missing)")
		return c.ensureFile(rootPEMName, pemCert(tc.Cert))
	}
	if err != nil {
		return fmt.Errorf("generating the root key: %w", err)
	}
	if err := c.recordKey(cfg.RootToken, signer, *alg); err != nil {
		return err
	}

	// Step 2: self-sign with the root profile through ca's linted path,
	// which checks the token's signature.
	tmpl, err := ca.RootTemplate(*cn, *lifetime, a.now())
	if err != nil {
		return fmt.Errorf("building the root template: %w", err)
	}
	root, err := ca.CreateRoot(tmpl, signer)
	if err != nil {
		return fmt.Errorf("self-signing the root: %w", err)
	}

	// Step 3: the certificate goes onto the token next to its key.
	if err := tok.ImportCertificate(ctx, *label, signer.URI().ID, root); err != nil {
		return fmt.Errorf("importing the root certificate: %w", err)
	}
	if err := tok.CheckKey(ctx, signer, root); err != nil {
		return fmt.Errorf("checking the root key: %w", err)
	}
	c.recordCert(cfg.RootToken, *label, root)

	// Step 4: public outputs and the transcript.
	if err := c.output(rootPEMName, pemCert(root)); err != nil {
		return err
	}
	if err := c.listToken(ctx, cfg.RootToken, tok); err != nil {
		return err
	}
	return c.finish()
}

// ensureFile writes a public output when it is missing (idempotent runs).
func (c *ceremony) ensureFile(name string, data []byte) error {
	p := filepath.Join(c.opts.outDir, name)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(c.opts.outDir, publicDirMode); err != nil {
		return fmt.Errorf("creating %s: %w", c.opts.outDir, err)
	}
	return agent.WriteFile(p, data, publicFileMode, true)
}

type intermediateOpts struct {
	label, cn, alg, rootLabel string
	lifetime                  time.Duration
	rotate                    bool
	// uriNameConstraint adds the critical URI name constraint to the
	// intermediate (ca.IntermediateOptions); off by default because
	// pyca/cryptography rejects every chain through it (docs/operator.md).
	uriNameConstraint bool
	// crlBaseURL, when set, names the root's CRL in the intermediate's CRL
	// distribution point.
	crlBaseURL string
}

// uriNameConstraintUsage is the help of --uri-name-constraint.
const uriNameConstraintUsage = `add critical name constraints limiting URI SANs to the trust domain
(Go, OpenSSL and go-spiffe enforce them; pyca/cryptography, the Python
relying parties, rejects every chain through such an intermediate). Off by
default: ATR's issuance policy, lints and verify enforce the trust domain
either way; see docs/operator.md`

func runCeremonyIntermediate(ctx context.Context, a *app, args []string) error {
	return ceremonyIntermediate(ctx, a, args, false)
}

func runCeremonyRotate(ctx context.Context, a *app, args []string) error {
	return ceremonyIntermediate(ctx, a, args, true)
}

func ceremonyIntermediate(ctx context.Context, a *app, args []string, rotate bool) error {
	var fs *flag.FlagSet
	defLabel := defaultIssuingLabel
	if rotate {
		defLabel = "atr-issuing-" + a.now().UTC().Format(ceremonyTimeFormat)
		fs = a.newFlagSet("ceremony rotate-intermediate", "ceremony rotate-intermediate [flags]",
			`Generate a new issuing key with a new label on the online token, certify it
with the root key (root token), and import the new intermediate certificate.
The previous issuing key and certificate stay on the token so that
certificates they issued keep verifying until they expire; the server uses
the newest issuing certificate after a restart (or ATR_ISSUING_KEY).
Rewrites DATA_DIR/ca/intermediate.pem and bundle.pem; writes a transcript.`,
			`atr ceremony rotate-intermediate --data-dir ./var --operator alice
# then restart 'atr serve' to issue from the new key`)
	} else {
		fs = a.newFlagSet("ceremony intermediate", "ceremony intermediate [flags]",
			`Generate the issuing (intermediate) key on the online token, certify it with
the root key from the root token (pathLen 0; with --uri-name-constraint also
critical name constraints limiting URI SANs to the trust domain), import the
intermediate and root certificates onto the online token and write
DATA_DIR/ca/intermediate.pem and DATA_DIR/ca/bundle.pem. Refuses to run over
an existing key. A transcript is written to DATA_DIR/ceremonies/.`,
			`atr ceremony intermediate --data-dir ./var --trust-domain example.org --operator alice
# only if no Python (pyca/cryptography) relying party must verify the chain:
atr ceremony intermediate --data-dir ./var --trust-domain example.org --uri-name-constraint`)
	}
	var (
		opts ceremonyOpts
		iopt intermediateOpts
	)
	iopt.rotate = rotate
	fs.StringVar(&iopt.label, "label", defLabel, "label of the new issuing key and certificate on the online token")
	fs.StringVar(&iopt.cn, "cn", defaultIssuingCN, "common name of the intermediate certificate")
	fs.DurationVar(&iopt.lifetime, "lifetime", defaultIssuingLife, "intermediate certificate lifetime (at most 2 years)")
	fs.StringVar(&iopt.alg, "algorithm", defaultIssuingAlgo, "key algorithm: ecdsa-p256, ecdsa-p384, rsa-3072, rsa-4096")
	fs.StringVar(&iopt.rootLabel, "root-label", "", "label of the root on the root token (default: the newest valid root with a key)")
	fs.BoolVar(&iopt.uriNameConstraint, "uri-name-constraint", false, uriNameConstraintUsage)
	crlBase, _ := a.lookupEnv("ATR_HTTP_PUBLIC_URL")
	fs.StringVar(&iopt.crlBaseURL, "crl-base-url", crlBase, "base URL of the registry's CRLs (the http distribution listener, ATR_HTTP_PUBLIC_URL): the intermediate's CRL distribution point becomes URL/v1/crl/<root key id>, where the root's CRL of revoked intermediates is published (atr ceremony root-crl)")
	opts.bind(fs, !rotate)
	cfg, err := a.loadConfig(fs, optCommon|optToken|optRoot|optTrust, args)
	if err != nil {
		return err
	}
	if err := checkAlgorithm(iopt.alg); err != nil {
		return err
	}
	if iopt.lifetime <= 0 || iopt.lifetime > maxIssuingLifetime {
		return usagef("--lifetime %v: must be positive and at most 2 years", iopt.lifetime)
	}
	if iopt.crlBaseURL != "" {
		if err := checkHTTPPublicURL(iopt.crlBaseURL); err != nil {
			return usagef("--crl-base-url %q: %v", iopt.crlBaseURL, err)
		}
	}
	name := "intermediate"
	if rotate {
		name = "rotate-intermediate"
	}
	c, err := a.newCeremony(name, cfg, opts)
	if err != nil {
		return err
	}
	c.t.TrustDomain = cfg.TrustDomain
	c.t.URINameConstraint = &iopt.uriNameConstraint
	return c.intermediate(ctx, iopt)
}

func (c *ceremony) intermediate(ctx context.Context, o intermediateOpts) error {
	cfg, now := c.cfg, c.a.now()
	issuing, err := openIssuingToken(ctx, cfg, c.log)
	if err != nil {
		return err
	}
	defer issuing.Close()

	existing, err := issuing.Certificates(ctx)
	if err != nil {
		return fmt.Errorf("listing certificates on token %q: %w", cfg.PKCS11Token, err)
	}
	_, oldIntermediates := splitCAs(existing)
	if o.rotate && len(oldIntermediates) == 0 {
		return fmt.Errorf("token %q holds no intermediate to rotate; run 'atr ceremony intermediate' first", cfg.PKCS11Token)
	}
	if c.opts.ifMissing {
		// Idempotent runs: an existing, complete intermediate under this
		// label means there is nothing to do (and no need for the root).
		for _, tc := range existing {
			if tc.Label == o.label {
				c.log.WithField("label", o.label).Info("issuing key and certificate already on the token; nothing to do (--if-missing)")
				c.warnConstraintMismatch(tc.Cert, o)
				return c.writeBundle(ctx, issuing, tc.Cert, false)
			}
		}
	}

	// Step 1: the root key and certificate, from the root token.
	root, rootSigner, rootTC, err := c.rootKey(ctx, o.rootLabel, now)
	if err != nil {
		return err
	}
	defer root.Close()

	// Step 2: the new issuing key on the online token.
	signer, err := issuing.GenerateKey(ctx, o.label, hsm.KeyAlgorithm(o.alg))
	if errors.Is(err, hsm.ErrExists) {
		tc, err := c.existingKey(ctx, issuing, cfg.PKCS11Token, o.label, true)
		if err != nil {
			return err
		}
		return c.writeBundle(ctx, issuing, tc.Cert, false)
	}
	if err != nil {
		return fmt.Errorf("generating the issuing key: %w", err)
	}
	if err := c.recordKey(cfg.PKCS11Token, signer, o.alg); err != nil {
		return err
	}

	// Step 3: certify it with the root through ca's linted path (which
	// refuses an intermediate outliving the root and checks the chain).
	iopts := ca.IntermediateOptions{URINameConstraint: o.uriNameConstraint}
	if o.crlBaseURL != "" {
		iopts.CRLURL = strings.TrimSuffix(o.crlBaseURL, "/") + "/v1/crl/" + ca.KeyID(rootTC.Cert)
	}
	tmpl, err := ca.IntermediateTemplateWithOptions(o.cn, cfg.TrustDomain, o.lifetime, now, iopts)
	if err != nil {
		return fmt.Errorf("building the intermediate template: %w", err)
	}
	cert, err := ca.CreateIntermediate(tmpl, ca.CAKey{Cert: rootTC.Cert, Signer: rootSigner}, signer.Public(), now)
	if err != nil {
		return fmt.Errorf("certifying the issuing key with the root: %w", err)
	}

	// Step 4: intermediate and root certificates onto the online token.
	if err := issuing.ImportCertificate(ctx, o.label, signer.URI().ID, cert); err != nil {
		return fmt.Errorf("importing the intermediate certificate: %w", err)
	}
	if err := issuing.CheckKey(ctx, signer, cert); err != nil {
		return fmt.Errorf("checking the issuing key: %w", err)
	}
	c.recordCert(cfg.PKCS11Token, o.label, cert)
	if err := importRootIfMissing(ctx, issuing, existing, rootTC); err != nil {
		return err
	}
	c.recordCert(cfg.PKCS11Token, rootTC.Label, rootTC.Cert)

	// Step 5: public outputs, token listings and the transcript.
	if err := c.ensureFile(rootPEMName, pemCert(rootTC.Cert)); err != nil {
		return err
	}
	if err := c.writeBundle(ctx, issuing, cert, true); err != nil {
		return err
	}
	if err := c.listToken(ctx, cfg.RootToken, root); err != nil {
		return err
	}
	if err := c.listToken(ctx, cfg.PKCS11Token, issuing); err != nil {
		return err
	}
	return c.finish()
}

// rootKey logs into the root token and finds the root's key and certificate
// (the one labelled label, or the newest valid root with a key). The caller
// closes the token.
func (c *ceremony) rootKey(ctx context.Context, label string, now time.Time) (*hsm.Token, *hsm.Signer, hsm.TokenCertificate, error) {
	root, err := openRootToken(ctx, c.cfg, c.log)
	if err != nil {
		return nil, nil, hsm.TokenCertificate{}, err
	}
	rootCerts, err := root.Certificates(ctx)
	if err != nil {
		root.Close()
		return nil, nil, hsm.TokenCertificate{}, fmt.Errorf("listing certificates on token %q: %w", c.cfg.RootToken, err)
	}
	roots, _ := splitCAs(rootCerts)
	signer, tc, err := findRootKey(ctx, root, c.cfg.RootToken, label, roots, now)
	if err != nil {
		root.Close()
		return nil, nil, hsm.TokenCertificate{}, fmt.Errorf("finding the root: %w (run 'atr ceremony root' first)", err)
	}
	return root, signer, tc, nil
}

// warnConstraintMismatch warns when an existing intermediate (kept by
// --if-missing) differs from what --uri-name-constraint asked for: only a
// rotation changes it.
func (c *ceremony) warnConstraintMismatch(cert *x509.Certificate, o intermediateOpts) {
	if has := len(cert.PermittedURIDomains) > 0; has != o.uriNameConstraint {
		c.log.WithFields(logrus.Fields{"label": o.label, "uri_name_constraint": has}).
			Warn("the existing intermediate differs from --uri-name-constraint; run 'atr ceremony rotate-intermediate' to change it")
	}
}

// importRootIfMissing puts the root certificate onto the online token, where
// verification loads its trust anchors, unless it is already there.
func importRootIfMissing(ctx context.Context, tok *hsm.Token, existing []hsm.TokenCertificate, root hsm.TokenCertificate) error {
	for _, tc := range existing {
		if tc.Cert != nil && tc.Cert.Equal(root.Cert) {
			return nil
		}
	}
	if err := tok.ImportCertificate(ctx, root.Label, root.ID, root.Cert); err != nil {
		return fmt.Errorf("importing the root certificate onto the online token: %w", err)
	}
	return nil
}

// writeBundle writes intermediate.pem (the given, newest intermediate) and
// bundle.pem (every unexpired intermediate and root on the online token).
// Recorded in the transcript when record is set; otherwise only missing
// files are written.
func (c *ceremony) writeBundle(ctx context.Context, tok *hsm.Token, intermediate *x509.Certificate, record bool) error {
	certs, err := tok.Certificates(ctx)
	if err != nil {
		return fmt.Errorf("listing certificates: %w", err)
	}
	roots, intermediates := splitCAs(certs)
	bundle := ca.EncodeCertificatesPEM(ca.Bundle(certsOf(roots), certsOf(intermediates), c.a.now())...)
	if !record {
		if err := c.ensureFile(intermediatePEMName, pemCert(intermediate)); err != nil {
			return err
		}
		if len(roots) > 0 {
			if err := c.ensureFile(rootPEMName, pemCert(roots[0].Cert)); err != nil {
				return err
			}
		}
		return c.ensureFile(bundlePEMName, bundle)
	}
	if err := c.output(intermediatePEMName, pemCert(intermediate)); err != nil {
		return err
	}
	return c.output(bundlePEMName, bundle)
}

func runCeremonyLogKey(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("ceremony log-key", "ceremony log-key [flags]",
		`Generate the transparency-log signing key (ECDSA P-256, sensitive, never
extractable) on the online token and write its public key to
DATA_DIR/ca/log-key.pem for auditors. Refuses to run over an existing key.`,
		`atr ceremony log-key --data-dir ./var --operator alice`)
	return runOnlineKeyCeremony(ctx, a, fs, args, onlineKey{
		ceremony: "log-key", what: "log key", defaultLabel: defaultLogKeyLabel, alg: hsm.ECDSAP256, pemName: logKeyPEMName,
	})
}

func runCeremonyVRFKey(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("ceremony vrf-key", "ceremony vrf-key [flags]",
		`Generate the name-index VRF key (RSA, exponent 65537, sensitive, never
extractable, sign-only) on the online token and write its public key to
DATA_DIR/ca/vrf-key.pem for owners and relying parties, who check the log's
name indexes with it (docs/transparency.md). Refuses to run over an existing
key. The key cannot be changed later without changing every name index.

--algorithm rsa-3072 (the default) keeps the names in the public log
unguessable for as long as RSA-3072 stands (NIST: 128-bit security).
rsa-2048 (112-bit, NIST: through 2030) costs a quarter of the token time per
new name (SoftHSM2: ~0.65 ms instead of ~2.6 ms, docs/performance-history.md);
choose it only when the names need not stay private after 2030.`,
		`atr ceremony vrf-key --data-dir ./var --operator alice
  atr ceremony vrf-key --algorithm rsa-2048 --operator alice`)
	return runOnlineKeyCeremony(ctx, a, fs, args, onlineKey{
		ceremony: "vrf-key", what: "VRF key", defaultLabel: defaultVRFKeyLabel, alg: hsm.RSA3072, pemName: vrfKeyPEMName,
		algs:  []hsm.KeyAlgorithm{hsm.RSA2048, hsm.RSA3072, hsm.RSA4096},
		check: func(pub crypto.PublicKey) error { _, err := translog.CheckVRFKey(pub); return err },
	})
}

func runCeremonyJWTKey(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("ceremony jwt-key", "ceremony jwt-key [flags]",
		`Generate a JWT-SVID signing key (ECDSA P-256, ES256; sensitive, never
extractable, sign-only) on the online token and write its public key to
DATA_DIR/ca/jwt-key.pem. JWT-SVIDs are signed by the key --jwt-key names
(default label atr-jwt); to rotate, generate a key under a new --label,
serve with --jwt-key naming it and --jwt-previous-keys naming the old one
until every token it signed has expired (at most 5 minutes). Refuses to run
over an existing key.`,
		`atr ceremony jwt-key --data-dir ./var --operator alice
  atr ceremony jwt-key --label atr-jwt-2 --operator alice    # rotation`)
	return runOnlineKeyCeremony(ctx, a, fs, args, onlineKey{
		ceremony: "jwt-key", what: "JWT-SVID key", defaultLabel: defaultJWTKeyLabel, alg: hsm.ECDSAP256, pemName: jwtKeyPEMName,
		check: checkES256Key,
	})
}

func runCeremonyCardKey(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("ceremony card-key", "ceremony card-key [flags]",
		`Generate the A2A agent-card signing key (ECDSA P-256, ES256; sensitive,
never extractable, sign-only) on the online token and write its public key
to DATA_DIR/ca/card-key.pem. Its kid is published at /.well-known/jwks.json.
Refuses to run over an existing key.`,
		`atr ceremony card-key --data-dir ./var --operator alice`)
	return runOnlineKeyCeremony(ctx, a, fs, args, onlineKey{
		ceremony: "card-key", what: "agent-card key", defaultLabel: defaultCardKeyLabel, alg: hsm.ECDSAP256, pemName: cardKeyPEMName,
		check: checkES256Key,
	})
}

// checkES256Key refuses a JWT-SVID or agent-card key that is not ECDSA
// P-256 (ES256), so that --if-missing never adopts another key under the label.
func checkES256Key(pub crypto.PublicKey) error { _, err := ca.JWKThumbprint(pub); return err }

// onlineKey describes a key ceremony for a key on the online token that has
// no certificate (the log key, the VRF key).
type onlineKey struct {
	ceremony, what, defaultLabel string
	alg                          hsm.KeyAlgorithm             // the default
	algs                         []hsm.KeyAlgorithm           // when set, --algorithm chooses one of them
	pemName                      string                       // public key file in DATA_DIR/ca
	check                        func(crypto.PublicKey) error // extra check of the public key, or nil
}

// runOnlineKeyCeremony generates k on the online token, records it in the
// transcript and writes its public key; with --if-missing an existing key
// is checked (attribute policy, and k.check) and its public key written.
func runOnlineKeyCeremony(ctx context.Context, a *app, fs *flag.FlagSet, args []string, k onlineKey) error {
	var opts ceremonyOpts
	label := fs.String("label", k.defaultLabel, "label of the "+k.what+" on the online token")
	alg := string(k.alg)
	if len(k.algs) > 0 {
		names := make([]string, len(k.algs))
		for i, a := range k.algs {
			names[i] = string(a)
		}
		fs.StringVar(&alg, "algorithm", alg, "key algorithm: "+strings.Join(names, ", "))
	}
	opts.bind(fs, true)
	cfg, err := a.loadConfig(fs, optCommon|optToken, args)
	if err != nil {
		return err
	}
	if len(k.algs) > 0 && !slices.Contains(k.algs, hsm.KeyAlgorithm(alg)) {
		return usagef("unknown %s algorithm %q (%s)", k.what, alg, fs.Lookup("algorithm").Usage)
	}
	k.alg = hsm.KeyAlgorithm(alg)
	c, err := a.newCeremony(k.ceremony, cfg, opts)
	if err != nil {
		return err
	}
	tok, err := openIssuingToken(ctx, cfg, c.log)
	if err != nil {
		return err
	}
	defer tok.Close()
	check := func(s *hsm.Signer) error {
		if k.check == nil {
			return nil
		}
		return k.check(s.Public())
	}
	signer, err := tok.GenerateKey(ctx, *label, k.alg)
	if errors.Is(err, hsm.ErrExists) {
		if _, err := c.existingKey(ctx, tok, cfg.PKCS11Token, *label, false); err != nil {
			return err
		}
		s, err := tok.Signer(ctx, hsm.URI{Token: cfg.PKCS11Token, Object: *label})
		if err != nil {
			return fmt.Errorf("opening the existing %s: %w", k.what, err)
		}
		if err := check(s); err != nil {
			return fmt.Errorf("the existing key %q cannot be the %s: %w", *label, k.what, err)
		}
		if err := tok.CheckKeyPolicy(ctx, s); err != nil {
			return fmt.Errorf("the existing key %q cannot be the %s: %w", *label, k.what, err)
		}
		pub, err := publicKeyPEM(s)
		if err != nil {
			return err
		}
		if rk, ok := s.Public().(*rsa.PublicKey); ok && len(k.algs) > 0 && string(k.alg) != fmt.Sprintf("rsa-%d", rk.N.BitLen()) {
			// The key cannot change under its label (every name index would);
			// say so rather than pretend --algorithm was applied.
			c.log.WithFields(logrus.Fields{"label": *label, "existing": fmt.Sprintf("rsa-%d", rk.N.BitLen()), "algorithm": k.alg}).
				Warn("the existing " + k.what + " is kept; --algorithm applies only to a new key")
		}
		c.log.WithField("label", *label).Info(k.what + " already on the token; nothing to do (--if-missing)")
		return c.ensureFile(k.pemName, pub)
	}
	if err != nil {
		return fmt.Errorf("generating the %s: %w", k.what, err)
	}
	if err := check(signer); err != nil {
		return fmt.Errorf("the token generated an unusable %s %q: %w", k.what, *label, err)
	}
	if rk, ok := signer.Public().(*rsa.PublicKey); ok && string(k.alg) != fmt.Sprintf("rsa-%d", rk.N.BitLen()) {
		return fmt.Errorf("the token generated an RSA-%d key %q when asked for %s", rk.N.BitLen(), *label, k.alg)
	}
	if err := c.recordKey(cfg.PKCS11Token, signer, string(k.alg)); err != nil {
		return err
	}
	pub, err := publicKeyPEM(signer)
	if err != nil {
		return err
	}
	if err := c.output(k.pemName, pub); err != nil {
		return err
	}
	if err := c.listToken(ctx, cfg.PKCS11Token, tok); err != nil {
		return err
	}
	return c.finish()
}

func publicKeyPEM(s *hsm.Signer) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil {
		return nil, fmt.Errorf("encoding the public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

func runCeremonyShow(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("ceremony show", "ceremony show [flags]",
		`List the objects on a token (keys and certificates with their PKCS#11
attributes) as JSON. Read-only: nothing on the token changes. Lists the
online (issuing) token, or the root token with --root.`,
		`atr ceremony show --data-dir ./var
atr ceremony show --data-dir ./var --root`)
	rootTok := fs.Bool("root", false, "list the root token instead of the online token")
	cfg, err := a.loadConfig(fs, optCommon|optToken|optRoot, args)
	if err != nil {
		return err
	}
	log := newLogger(a.stderr, cfg.LogLevel).WithField("command", "ceremony show")
	if err := a.useDevSoftHSMConf(cfg, log); err != nil {
		return err
	}
	label := cfg.PKCS11Token
	open := openIssuingToken
	if *rootTok {
		label, open = cfg.RootToken, openRootToken
	}
	tok, err := open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer tok.Close()
	objs, err := tok.Objects(ctx)
	if err != nil {
		return fmt.Errorf("listing the objects on token %q: %w", label, err)
	}
	out, err := json.MarshalIndent(map[string]any{"token": label, "objects": objectsJSON(objs)}, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the listing: %w", err)
	}
	_, err = fmt.Fprintf(a.stdout, "%s\n", strings.TrimSpace(string(out)))
	return err
}
