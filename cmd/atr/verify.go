package main

// verify.go is `atr verify` for relying parties: is this certificate a
// genuine, current, unrevoked ATR agent certificate? Online it asks the
// registry (POST /v1/verify); offline it builds the chain to a CA bundle with
// x509.Verify and checks a CRL signed by the issuing CA; with --receipt it
// checks the certificate's log receipt with rp.ReceiptVerifier, offline;
// with --follow it follows the log's event stream with rp.Follower and
// prints every verified revocation and rotation.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

// errNotVerified marks a certificate that did not verify: exit status 1.
var errNotVerified = errors.New("certificate NOT verified")

// parseWithArgs parses flags that may come before or after positional
// arguments and returns the positional ones (everything after "--" is
// positional).
func (a *app) parseWithArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	for _, arg := range args {
		if arg == "--" {
			break
		}
		if arg == "-h" || arg == "-help" || arg == "--help" || arg == "--h" {
			fs.SetOutput(a.stdout)
			fs.Usage()
			return nil, flag.ErrHelp
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, &usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		// fs.Parse stops at the first positional argument, or after "--".
		if len(args) > 0 && args[0] != "" && !strings.HasPrefix(args[0], "-") {
			pos = append(pos, args[0])
			args = args[1:]
			continue
		}
		return append(pos, args...), nil
	}
}

type verifyOutput struct {
	Verified          bool       `json:"verified"`
	Mode              string     `json:"mode"` // "online" or "offline"
	Agent             string     `json:"agent,omitempty"`
	Status            string     `json:"status,omitempty"`
	Serial            string     `json:"serial,omitempty"`
	FingerprintSHA256 string     `json:"fingerprint_sha256,omitempty"`
	NotAfter          *time.Time `json:"not_after,omitempty"`
	Reason            string     `json:"reason,omitempty"`
	LogIndex          *int64     `json:"log_index,omitempty"`
	CRLNumber         string     `json:"crl_number,omitempty"`
	CRLNextUpdate     *time.Time `json:"crl_next_update,omitempty"`
	TreeSize          *int64     `json:"tree_size,omitempty"`         // receipt: the checkpoint's
	Witnesses         *int       `json:"witness_threshold,omitempty"` // receipt: cosignatures required
}

func runVerify(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("verify", "verify CERT.pem [--chain FILE] (--server URL | --offline --bundle FILE --crl FILE | --receipt FILE) | verify --follow --server URL",
		`Check that CERT.pem (an agent certificate as presented; intermediates may
follow it in the file or be given with --chain) is a genuine, current,
unrevoked ATR agent certificate.

Online (default): asks the registry, POST /v1/verify, which builds the chain
to the roots on its token and looks up the status by SHA-256 fingerprint.

Offline (--offline): no registry call. The chain is built with x509.Verify
to the self-signed roots in --bundle (its other certificates serve as
intermediates); every certificate must be valid now, the leaf must allow
digitalSignature and clientAuth and carry exactly one URI SAN
spiffe://<trust-domain>/agent/<name> (--trust-domain pins the domain; default:
the certificate's own, bounded by the issuing CA's URI name constraint only
if it has one, see 'ceremony intermediate --uri-name-constraint'). Then
--crl (DER or PEM, from GET /v1/crl) must be signed by the certificate's
issuing CA, be current (thisUpdate ≤ now < nextUpdate) and must not list the
serial (revoked and superseded certificates are listed).

Receipt (--receipt FILE, the "receipt" of a register, rotate or verify
answer; docs/transparency.md, "Receipts"): no network. The certificate must
chain to the roots of --bundle (else --ca-bundle, else
DATA_DIR/ca/bundle.pem) as offline; the receipt's opened entry must be this
certificate and open its log leaf (fingerprint, SPIFFE name, the VRF proof of
the name under --vrf-key); the checkpoint must be signed by --log-key (PEM
public key, ECDSA or Ed25519, or verifier key strings as GET /v1/log/vkey
serves them) and cosigned by at least --witness-threshold of the --witness
keys (C2SP cosignature/v1 verifier keys; repeatable; a value naming a file
reads one key per line); the inclusion proof must prove the leaf in that
checkpoint's tree. A threshold of 0 (the default without --witness) trusts
the log's signature alone. A receipt proves the certificate was logged, not
that it is unrevoked: combine with --offline's CRL or the online check.

Follow (--follow, no certificate): subscribe to the log's event stream (GET
/v1/log/events on --server) and print every revocation and rotation as soon
as it is logged (one line each; --json: one JSON object per line), until
interrupted. Every event is verified first (rp.Follower): its checkpoint is
signed by --log-key (with --trust-domain, default: the served checkpoint's
origin) and cosigned as --witness/--witness-threshold require; it is
consistent with every checkpoint seen before (GET /v1/log/proof/consistency);
its inclusion proof holds; and the indexes follow one another with no gap or
repetition. A lost connection is resumed at the next index. --from N starts
at leaf N (default 0, the whole log).

Exit status: 0 only when the certificate verified (--follow: when
interrupted); 1 when it did not, when a followed event was refused (the
evidence is printed on stderr), or on any error (a server error shows its
code and request ID); 2 a usage error.`,
		`atr verify agent.pem --chain agent.chain.pem --server https://127.0.0.1:8443 --ca-bundle ./var/ca/bundle.pem
curl -s --cacert ./var/ca/bundle.pem https://127.0.0.1:8443/v1/crl -o atr.crl
atr verify agent.pem --chain agent.chain.pem --offline --bundle ./var/ca/bundle.pem --crl atr.crl
atr verify agent.pem --receipt agent.receipt.json --bundle bundle.pem --log-key log.vkey --vrf-key vrf-key.pem \
    --witness 'witness.example+6b1e0f3a+AXd…' --witness-threshold 1
atr verify --follow --server https://127.0.0.1:8443 --ca-bundle ./var/ca/bundle.pem --log-key ./var/ca/log-key.pem --json`)
	var o agentOpts
	o.bind(fs, a.lookupEnv, afServer|afCABundle)
	var chainFile, bundle, crlFile, trustDomain string
	fs.StringVar(&chainFile, "chain", "", "PEM intermediates presented with the certificate")
	offline := fs.Bool("offline", false, "verify locally against --bundle and --crl, without the registry")
	envString(fs, a.lookupEnv, &bundle, "bundle", "ATR_BUNDLE", "", "offline: PEM CA bundle (roots and intermediates, GET /v1/ca/bundle)")
	envString(fs, a.lookupEnv, &crlFile, "crl", "ATR_CRL", "", "offline: the CRL (DER or PEM, GET /v1/crl)")
	envString(fs, a.lookupEnv, &trustDomain, "trust-domain", "ATR_TRUST_DOMAIN", "", "offline: required SPIFFE trust domain (default: the certificate's)")
	var ro receiptOpts
	fs.StringVar(&ro.receipt, "receipt", "", "verify offline with this log receipt (JSON)")
	envString(fs, a.lookupEnv, &ro.dataDir, "data-dir", "ATR_DATA_DIR", "./var", "receipt: where the default --log-key, --vrf-key and bundle live")
	fs.StringVar(&ro.logKey, "log-key", "", "receipt: the log's public key, PEM or verifier key strings (default DATA_DIR/ca/log-key.pem)")
	fs.StringVar(&ro.vrfKey, "vrf-key", "", "receipt: the log's VRF public key, PEM (default DATA_DIR/ca/vrf-key.pem)")
	fs.Func("witness", "receipt: a witness's cosignature verifier key, or a file of them (repeatable)", func(v string) error {
		ro.witnesses = append(ro.witnesses, v)
		return nil
	})
	fs.IntVar(&ro.threshold, "witness-threshold", -1, "receipt: how many --witness keys must have cosigned; -1: all of them")
	jsonOut := fs.Bool("json", false, "print the result as JSON")
	follow := fs.Bool("follow", false, "follow the log's event stream and print each verified revocation and rotation (no certificate)")
	from := fs.Int64("from", 0, "follow: the first leaf index")
	pos, err := a.parseWithArgs(fs, args)
	if err != nil {
		return err
	}
	if *follow {
		switch {
		case len(pos) != 0:
			return usagef("--follow takes no certificate, got %d arguments", len(pos))
		case ro.receipt != "" || *offline:
			return usagef("--follow is neither --receipt nor --offline")
		case *from < 0:
			return usagef("--from must not be negative")
		}
		return a.followLog(ctx, o, ro, trustDomain, *from, *jsonOut)
	}
	if len(pos) != 1 {
		return usagef("want exactly one certificate file, got %d arguments", len(pos))
	}
	leaf, extra, err := loadAgentCert(pos[0], chainFile)
	if err != nil {
		return err
	}
	var out verifyOutput
	if ro.receipt != "" {
		if *offline {
			return usagef("--receipt and --offline are two different checks; run them one after the other")
		}
		if bundle == "" {
			bundle = o.caBundle
		}
		if bundle == "" {
			bundle = filepath.Join(ro.dataDir, "ca", "bundle.pem")
		}
		out, err = verifyReceiptFile(leaf, extra, bundle, trustDomain, ro, a.now())
		if err != nil {
			return err
		}
	} else if *offline {
		if bundle == "" || crlFile == "" {
			return usagef("--offline needs --bundle and --crl")
		}
		out, err = verifyOffline(leaf, extra, bundle, crlFile, trustDomain, a.now())
		if err != nil {
			return err
		}
	} else {
		c, err := o.newClient("", nil)
		if err != nil {
			return err
		}
		res, err := c.Verify(ctx, ca.EncodeCertificatesPEM(leaf), pemOrNil(extra))
		if err != nil {
			return explain("verifying", err)
		}
		out = verifyOutput{Verified: res.Verified, Mode: "online", Agent: res.Agent, Status: res.Status, Serial: res.Serial,
			FingerprintSHA256: res.FingerprintSHA256, NotAfter: res.NotAfter, Reason: res.Reason, LogIndex: res.LogIndex}
	}
	if *jsonOut {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		a.printVerify(out)
	}
	if !out.Verified {
		return fmt.Errorf("%w: %s", errNotVerified, out.Reason)
	}
	return nil
}

func pemOrNil(certs []*x509.Certificate) []byte {
	if len(certs) == 0 {
		return nil
	}
	return ca.EncodeCertificatesPEM(certs...)
}

func (a *app) printVerify(o verifyOutput) {
	if o.Verified {
		fmt.Fprintf(a.stdout, "VERIFIED (%s)\n", o.Mode)
	} else {
		fmt.Fprintf(a.stdout, "NOT VERIFIED (%s): %s\n", o.Mode, o.Reason)
	}
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(a.stdout, "%s: %s\n", k, v)
		}
	}
	line("agent", o.Agent)
	line("status", o.Status)
	line("serial", o.Serial)
	line("fingerprint SHA-256", o.FingerprintSHA256)
	if o.NotAfter != nil {
		line("not after", o.NotAfter.UTC().Format(time.RFC3339))
	}
	if o.LogIndex != nil {
		line("log index", fmt.Sprint(*o.LogIndex))
	}
	if o.TreeSize != nil {
		line("included in tree of size", fmt.Sprint(*o.TreeSize))
	}
	if o.Witnesses != nil {
		line("witness cosignatures required", fmt.Sprint(*o.Witnesses))
	}
	line("CRL number", o.CRLNumber)
	if o.CRLNextUpdate != nil {
		line("CRL next update", o.CRLNextUpdate.UTC().Format(time.RFC3339))
	}
}

// verifyOffline checks leaf against the bundle and the CRL at now. A
// certificate that does not verify is a result with Verified false; an
// unusable bundle or CRL is an error.
func verifyOffline(leaf *x509.Certificate, extra []*x509.Certificate, bundleFile, crlFile, trustDomain string, now time.Time) (verifyOutput, error) {
	na := leaf.NotAfter
	out := verifyOutput{Mode: "offline", Serial: ca.FormatSerial(leaf.SerialNumber), FingerprintSHA256: certFingerprint(leaf), NotAfter: &na}
	roots, intermediates, err := loadCABundle(bundleFile)
	if err != nil {
		return out, err
	}
	if trustDomain == "" {
		_, td, err := agentNameFromCert(leaf)
		if err != nil {
			out.Reason = string(ca.ReasonNotAgent)
			return out, nil
		}
		trustDomain = td
	}
	v, err := ca.NewVerifier(roots, intermediates, trustDomain)
	if err != nil {
		return out, fmt.Errorf("CA bundle %s: %w", bundleFile, err)
	}
	if err := v.Verify(leaf, extra, now); err != nil {
		var ve *ca.VerifyError
		if errors.As(err, &ve) {
			out.Reason = string(ve.Reason)
			return out, nil
		}
		return out, err
	}
	name, err := ca.AgentName(leaf, trustDomain)
	if err != nil {
		out.Reason = string(ca.ReasonNotAgent)
		return out, nil
	}
	out.Agent = name

	// The issuing CA: the verified parent of the leaf.
	var issuer *x509.Certificate
	for _, c := range append(append(append([]*x509.Certificate{}, extra...), intermediates...), roots...) {
		if bytes.Equal(c.RawSubject, leaf.RawIssuer) && leaf.CheckSignatureFrom(c) == nil {
			issuer = c
			break
		}
	}
	if issuer == nil {
		return out, errors.New("the certificate's issuing CA is not in the bundle or chain")
	}
	crl, err := loadCRL(crlFile)
	if err != nil {
		return out, err
	}
	if err := checkCRL(crl, issuer, now); err != nil {
		return out, fmt.Errorf("CRL %s: %w", crlFile, err)
	}
	if crl.Number != nil {
		out.CRLNumber = crl.Number.String()
	}
	nu := crl.NextUpdate
	out.CRLNextUpdate = &nu
	if e := crlEntry(crl, leaf.SerialNumber); e != nil {
		out.Status = "revoked"
		out.Reason = "revoked"
		if r := ca.ReasonName(e.ReasonCode); r == "superseded" {
			out.Status, out.Reason = "superseded", "superseded"
		} else if r != "" {
			out.Reason = "revoked (" + r + ")"
		}
		return out, nil
	}
	out.Verified, out.Status = true, "valid"
	return out, nil
}

// receiptOpts are the flags of `atr verify --receipt`.
type receiptOpts struct {
	receipt, dataDir, logKey, vrfKey string
	witnesses                        []string
	threshold                        int // -1: all the witnesses
}

// splitBundle separates self-signed roots from the other certificates.
func splitBundle(bundle []*x509.Certificate) (roots, intermediates []*x509.Certificate) {
	for _, c := range bundle {
		if bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
			roots = append(roots, c)
		} else {
			intermediates = append(intermediates, c)
		}
	}
	return roots, intermediates
}

// loadCABundle reads a PEM CA bundle and splits it; at least one root.
func loadCABundle(path string) (roots, intermediates []*x509.Certificate, err error) {
	data, err := readFileCapped(path, agentMaxCertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA bundle: %w", err)
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		return nil, nil, fmt.Errorf("CA bundle %s: %w", path, err)
	}
	roots, intermediates = splitBundle(certs)
	if len(roots) == 0 {
		return nil, nil, fmt.Errorf("CA bundle %s holds no self-signed root", path)
	}
	return roots, intermediates, nil
}

// loadLogVerifiers reads the pinned log key: a PEM public key (ECDSA P-256
// or Ed25519; its key name is origin) or verifier key strings.
func loadLogVerifiers(path, origin string) (note.Verifiers, error) {
	data, err := readFileCapped(path, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("reading the log key: %w", err)
	}
	b, rest := pem.Decode(data)
	if b == nil {
		return rp.ParseLogVerifiers(string(data))
	}
	if b.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("log key %s: want one PEM \"PUBLIC KEY\" block or verifier key strings", path)
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("log key %s: %w", path, err)
	}
	var v note.Verifier
	if _, ok := pub.(ed25519.PublicKey); ok {
		v, err = translog.NewEd25519NoteVerifier(origin, pub)
	} else {
		v, err = translog.NewNoteVerifier(origin, pub)
	}
	if err != nil {
		return nil, fmt.Errorf("log key %s: %w", path, err)
	}
	return note.VerifierList(v), nil
}

// loadVRFKey reads the VRF public key PEM.
func loadVRFKey(path string) (*rsa.PublicKey, error) {
	data, err := readFileCapped(path, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("reading the VRF key: %w", err)
	}
	k, err := translog.ParseVRFPublicKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("VRF key %s: %w", path, err)
	}
	return k, nil
}

// witnessPolicy builds the policy from --witness values (a key, or a file
// of keys one per line) and --witness-threshold (-1: all of them).
func witnessPolicy(values []string, threshold int) (rp.WitnessPolicy, error) {
	var p rp.WitnessPolicy
	for _, v := range values {
		if st, err := os.Stat(v); err == nil && st.Mode().IsRegular() {
			data, err := readFileCapped(v, 64<<10)
			if err != nil {
				return p, fmt.Errorf("reading witness keys: %w", err)
			}
			for _, line := range strings.Split(string(data), "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					p.Keys = append(p.Keys, line)
				}
			}
			continue
		}
		p.Keys = append(p.Keys, strings.TrimSpace(v))
	}
	p.Threshold = threshold
	if threshold < 0 {
		p.Threshold = len(p.Keys)
	}
	if err := p.Validate(); err != nil {
		return p, &usageError{err.Error()}
	}
	return p, nil
}

// verifyReceiptFile checks leaf with the receipt of ro, offline. A refused
// receipt is a result with Verified false; unusable inputs are errors.
func verifyReceiptFile(leaf *x509.Certificate, extra []*x509.Certificate, bundleFile, trustDomain string, ro receiptOpts, now time.Time) (verifyOutput, error) {
	na := leaf.NotAfter
	out := verifyOutput{Mode: "receipt", Serial: ca.FormatSerial(leaf.SerialNumber), FingerprintSHA256: certFingerprint(leaf), NotAfter: &na}
	receipt, err := readFileCapped(ro.receipt, translog.MaxReceiptSize)
	if err != nil {
		return out, fmt.Errorf("reading the receipt: %w", err)
	}
	roots, intermediates, err := loadCABundle(bundleFile)
	if err != nil {
		return out, err
	}
	if trustDomain == "" {
		_, td, err := agentNameFromCert(leaf)
		if err != nil {
			out.Reason = string(rp.ReasonChain) + ": " + string(ca.ReasonNotAgent)
			return out, nil
		}
		trustDomain = td
	}
	if ro.logKey == "" {
		ro.logKey = filepath.Join(ro.dataDir, "ca", "log-key.pem")
	}
	if ro.vrfKey == "" {
		ro.vrfKey = filepath.Join(ro.dataDir, "ca", "vrf-key.pem")
	}
	// A PEM key names no origin: it is pinned to this trust domain's log, the
	// origin rp.ReceiptVerifier requires too.
	logVerifiers, err := loadLogVerifiers(ro.logKey, trustDomain+"/log")
	if err != nil {
		return out, err
	}
	vrfKey, err := loadVRFKey(ro.vrfKey)
	if err != nil {
		return out, err
	}
	policy, err := witnessPolicy(ro.witnesses, ro.threshold)
	if err != nil {
		return out, err
	}
	v := rp.ReceiptVerifier{Roots: roots, Intermediates: append(intermediates, extra...), TrustDomain: trustDomain,
		LogVerifiers: logVerifiers, VRFKey: vrfKey, Witnesses: policy}
	got, err := v.Verify(leaf.Raw, receipt, now)
	var re *rp.ReceiptError
	switch {
	case errors.As(err, &re):
		out.Reason = strings.TrimPrefix(re.Error(), "rp: receipt refused: ")
		return out, nil
	case err != nil:
		return out, err
	}
	size, k := got.Checkpoint.Size, policy.Threshold
	out.Verified, out.Agent, out.LogIndex, out.TreeSize, out.Witnesses = true, got.Name, &got.LeafIndex, &size, &k
	return out, nil
}

// loadCRL reads a DER or PEM ("X509 CRL") CRL.
func loadCRL(path string) (*x509.RevocationList, error) {
	data, err := readFileCapped(path, 16<<20)
	if err != nil {
		return nil, fmt.Errorf("reading the CRL: %w", err)
	}
	if b, rest := pem.Decode(data); b != nil {
		if b.Type != "X509 CRL" || len(bytes.TrimSpace(rest)) != 0 {
			return nil, fmt.Errorf("CRL %s: want one PEM \"X509 CRL\" block or DER", path)
		}
		data = b.Bytes
	}
	crl, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("CRL %s: %w", path, err)
	}
	return crl, nil
}

// checkCRL checks that issuer signed crl, names it as issuer, and that crl is
// current at now.
func checkCRL(crl *x509.RevocationList, issuer *x509.Certificate, now time.Time) error {
	if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return errors.New("not issued by the certificate's issuing CA")
	}
	if len(crl.AuthorityKeyId) > 0 && len(issuer.SubjectKeyId) > 0 && !bytes.Equal(crl.AuthorityKeyId, issuer.SubjectKeyId) {
		return errors.New("authority key identifier does not match the issuing CA")
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("signature does not verify under the issuing CA: %w", err)
	}
	if now.Before(crl.ThisUpdate) {
		return fmt.Errorf("not valid before %s", crl.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if crl.NextUpdate.IsZero() {
		return errors.New("no nextUpdate: cannot tell whether it is current")
	}
	if !now.Before(crl.NextUpdate) {
		return fmt.Errorf("stale: nextUpdate %s has passed (fetch a fresh CRL)", crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}

func crlEntry(crl *x509.RevocationList, serial *big.Int) *x509.RevocationListEntry {
	for i := range crl.RevokedCertificateEntries {
		if crl.RevokedCertificateEntries[i].SerialNumber.Cmp(serial) == 0 {
			return &crl.RevokedCertificateEntries[i]
		}
	}
	return nil
}

// followedEvent is one line of `atr verify --follow --json`.
type followedEvent struct {
	Index    int64     `json:"index"`
	Type     string    `json:"type"`
	Time     time.Time `json:"time"`
	TreeSize int64     `json:"tree_size"` // of the verified checkpoint that includes it
	// FingerprintSHA256 is the certificate revoked, or the new one of a
	// rotation, which replaced PreviousFingerprintSHA256.
	FingerprintSHA256         string `json:"fingerprint_sha256"`
	PreviousFingerprintSHA256 string `json:"previous_fingerprint_sha256,omitempty"`
	Reason                    string `json:"reason,omitempty"`
}

// followLog is `atr verify --follow`: rp.Follower on --server, printing the
// verified revocations and rotations until ctx ends.
func (a *app) followLog(ctx context.Context, o agentOpts, ro receiptOpts, trustDomain string, from int64, jsonOut bool) error {
	if o.server == "" {
		return usagef("--server (ATR_SERVER) is required")
	}
	policy, err := witnessPolicy(ro.witnesses, ro.threshold)
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if o.caBundle != "" {
		if tr.TLSClientConfig.RootCAs, err = loadCertPool(o.caBundle); err != nil {
			return err
		}
	}
	hc := &http.Client{Transport: tr} // no Timeout: the stream lasts
	origin := ""
	if trustDomain != "" {
		origin = trustDomain + "/log"
	} else {
		// A PEM log key names no origin: take the served checkpoint's, which
		// the key must then have signed.
		c, err := o.newClient("", nil)
		if err != nil {
			return err
		}
		msg, err := c.Checkpoint(ctx)
		if err != nil {
			return explain("fetching the checkpoint", err)
		}
		origin = noteOrigin(msg)
	}
	if ro.logKey == "" {
		ro.logKey = filepath.Join(ro.dataDir, "ca", "log-key.pem")
	}
	lv, err := loadLogVerifiers(ro.logKey, origin)
	if err != nil {
		return err
	}
	f, err := rp.NewFollower(rp.FollowerConfig{URL: o.server, Client: hc, LogVerifiers: lv, Origin: origin, Witnesses: policy, From: from,
		Retried: func(err error) { fmt.Fprintf(a.stderr, "atr verify --follow: %v (reconnecting)\n", err) }})
	if err != nil {
		return usagef("%v", err)
	}
	fmt.Fprintf(a.stderr, "following %s from leaf %d (log %s)\n", o.server, from, origin)
	enc := json.NewEncoder(a.stdout)
	err = f.Run(ctx, func(ev rp.FollowedEvent) error {
		e := ev.Entry
		if e.Type != translog.EventRevoke && e.Type != translog.EventRotate {
			return nil
		}
		out := followedEvent{Index: ev.Index, Type: string(e.Type), Time: e.Time, TreeSize: ev.Checkpoint.Size,
			FingerprintSHA256: e.Fingerprint, PreviousFingerprintSHA256: e.Previous, Reason: e.Reason}
		if jsonOut {
			return enc.Encode(out)
		}
		ts := e.Time.UTC().Format(time.RFC3339)
		if e.Type == translog.EventRevoke {
			_, err := fmt.Fprintf(a.stdout, "REVOKED leaf %d %s fingerprint %s reason %s\n", ev.Index, ts, e.Fingerprint, e.Reason)
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "ROTATED leaf %d %s fingerprint %s replaces %s\n", ev.Index, ts, e.Fingerprint, e.Previous)
		return err
	})
	var fe *rp.FollowError
	switch {
	case errors.As(err, &fe):
		a.printFollowEvidence(fe)
		return fmt.Errorf("%w: %v", errLogCheck, err)
	case ctx.Err() != nil:
		return nil // interrupted: the normal end
	}
	return err
}

// printFollowEvidence writes what a refused event came with to stderr.
func (a *app) printFollowEvidence(fe *rp.FollowError) {
	w := a.stderr
	fmt.Fprintf(w, "EVENT REFUSED: %s at index %d (expected %d)\n", fe.Reason, fe.Index, fe.Want)
	if fe.Err != nil {
		fmt.Fprintf(w, "detail: %v\n", fe.Err)
	}
	section := func(name string, b []byte) {
		if len(b) > 0 {
			fmt.Fprintf(w, "--- %s ---\n%s", name, b)
			if b[len(b)-1] != '\n' {
				fmt.Fprintln(w)
			}
		}
	}
	section("event", fe.Event)
	section("checkpoint", fe.Checkpoint)
	section("earlier verified checkpoint", fe.Previous)
	if len(fe.Proof) > 0 {
		fmt.Fprintln(w, "--- consistency proof ---")
		for _, h := range fe.Proof {
			fmt.Fprintln(w, h.String())
		}
	}
}
