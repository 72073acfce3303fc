package main

// verify.go is `atr verify` for relying parties: is this certificate a
// genuine, current, unrevoked ATR agent certificate? Online it asks the
// registry (POST /v1/verify); offline it builds the chain to a CA bundle with
// x509.Verify and checks a CRL signed by the issuing CA; with --receipt it
// checks the certificate's log receipt with rp.ReceiptVerifier, offline;
// with --follow it follows the log's event stream with rp.Follower and
// prints every verified revocation and rotation.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api/client"
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
	leaf, extra, err := agent.LoadCertificate(pos[0], chainFile)
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
		out, err = verifyOffline(ctx, leaf, extra, bundle, crlFile, trustDomain, a.now())
		if err != nil {
			return err
		}
	} else {
		c, err := o.newClient("", nil)
		if err != nil {
			return err
		}
		v := rp.Verifier{Online: onlineVerifier{c}}
		res, err := v.Verify(ctx, leaf, extra, a.now())
		if err != nil {
			return err
		}
		r := res.Online
		out = verifyOutput{Verified: r.Verified, Mode: "online", Agent: r.Agent, Status: r.Status, Serial: r.Serial,
			FingerprintSHA256: r.FingerprintSHA256, NotAfter: r.NotAfter, Reason: r.Reason, LogIndex: r.LogIndex}
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

// verifyOffline checks leaf against the bundle and the CRL at now
// (rp.Verifier). A certificate that does not verify is a result with
// Verified false; an unusable bundle or CRL is an error.
func verifyOffline(ctx context.Context, leaf *x509.Certificate, extra []*x509.Certificate, bundleFile, crlFile, trustDomain string, now time.Time) (verifyOutput, error) {
	na := leaf.NotAfter
	out := verifyOutput{Mode: "offline", Serial: ca.FormatSerial(leaf.SerialNumber), FingerprintSHA256: ca.Fingerprint(leaf), NotAfter: &na}
	roots, intermediates, err := rp.LoadCABundle(bundleFile)
	if err != nil {
		return out, err
	}
	crl, err := rp.LoadCRL(crlFile)
	if err != nil {
		return out, err
	}
	v := rp.Verifier{Roots: roots, Intermediates: intermediates, TrustDomain: trustDomain, CRLs: []*x509.RevocationList{crl}}
	res, err := v.Verify(ctx, leaf, extra, now)
	switch {
	case errors.Is(err, rp.ErrStatus):
		return out, fmt.Errorf("CRL %s: %w", crlFile, err)
	case err != nil:
		return out, fmt.Errorf("CA bundle %s: %w", bundleFile, err)
	}
	out.Agent = res.Agent
	if res.CRL != nil {
		if res.CRL.Number != nil {
			out.CRLNumber = res.CRL.Number.String()
		}
		nu := res.CRL.NextUpdate
		out.CRLNextUpdate = &nu
	}
	switch res.Reason {
	case "":
		out.Verified, out.Status = true, "valid"
	case rp.ReasonRevoked:
		out.Status, out.Reason = "revoked", "revoked"
		if r := ca.ReasonName(res.Revocation.ReasonCode); r != "" {
			out.Reason = "revoked (" + r + ")"
		}
	case rp.ReasonSuperseded:
		out.Status, out.Reason = "superseded", "superseded"
	default:
		out.Reason = string(res.Reason)
	}
	return out, nil
}

// onlineVerifier asks the registry (POST /v1/verify) for rp.Verifier,
// without the log receipt, which rp.OnlineStatus does not carry.
type onlineVerifier struct{ c *client.Client }

func (o onlineVerifier) CheckOnline(ctx context.Context, leaf *x509.Certificate, chain []*x509.Certificate) (*rp.OnlineStatus, error) {
	res, err := o.c.VerifyWithoutReceipt(ctx, ca.EncodeCertificatesPEM(leaf), pemOrNil(chain))
	if err != nil {
		return nil, explain("verifying", err)
	}
	return &rp.OnlineStatus{Verified: res.Verified, Agent: res.Agent, Status: res.Status, Reason: res.Reason, Serial: res.Serial,
		FingerprintSHA256: res.FingerprintSHA256, NotAfter: res.NotAfter, LogIndex: res.LogIndex}, nil
}

// receiptOpts are the flags of `atr verify --receipt`.
type receiptOpts struct {
	receipt, dataDir, logKey, vrfKey string
	witnesses                        []string
	threshold                        int // -1: all the witnesses
}

// logVerifiers reads the pinned log key (rp.LoadLogKey) and returns its
// verifiers for checkpoints of origin.
func logVerifiers(path, origin string) (note.Verifiers, error) {
	k, err := rp.LoadLogKey(path)
	if err != nil {
		return nil, err
	}
	return k.Verifiers(origin)
}

// witnessPolicy is rp.LoadWitnessPolicy of the --witness values and
// --witness-threshold; an invalid policy is a usage error.
func witnessPolicy(values []string, threshold int) (rp.WitnessPolicy, error) {
	p, err := rp.LoadWitnessPolicy(values, threshold)
	var pe *rp.PolicyConfigError
	if errors.As(err, &pe) {
		return p, &usageError{err.Error()}
	}
	return p, err
}

// verifyReceiptFile checks leaf with the receipt of ro, offline. A refused
// receipt is a result with Verified false; unusable inputs are errors.
func verifyReceiptFile(leaf *x509.Certificate, extra []*x509.Certificate, bundleFile, trustDomain string, ro receiptOpts, now time.Time) (verifyOutput, error) {
	na := leaf.NotAfter
	out := verifyOutput{Mode: "receipt", Serial: ca.FormatSerial(leaf.SerialNumber), FingerprintSHA256: ca.Fingerprint(leaf), NotAfter: &na}
	receipt, err := agent.ReadFile(ro.receipt, translog.MaxReceiptSize)
	if err != nil {
		return out, fmt.Errorf("reading the receipt: %w", err)
	}
	roots, intermediates, err := rp.LoadCABundle(bundleFile)
	if err != nil {
		return out, err
	}
	if trustDomain == "" {
		_, td, err := ca.AgentIdentity(leaf)
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
	lv, err := logVerifiers(ro.logKey, trustDomain+"/log")
	if err != nil {
		return out, err
	}
	vrfKey, err := rp.LoadVRFKey(ro.vrfKey)
	if err != nil {
		return out, err
	}
	policy, err := witnessPolicy(ro.witnesses, ro.threshold)
	if err != nil {
		return out, err
	}
	v := rp.ReceiptVerifier{Roots: roots, Intermediates: append(intermediates, extra...), TrustDomain: trustDomain,
		LogVerifiers: lv, VRFKey: vrfKey, Witnesses: policy}
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
		origin = rp.NoteOrigin(msg)
	}
	if ro.logKey == "" {
		ro.logKey = filepath.Join(ro.dataDir, "ca", "log-key.pem")
	}
	lv, err := logVerifiers(ro.logKey, origin)
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
