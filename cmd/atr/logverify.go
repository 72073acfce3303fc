package main

// logverify.go is `atr log verify`, the auditor's and relying party's check of
// the transparency log: the latest checkpoint is signed by the pinned log key,
// it extends the last checkpoint this client saw (no rollback, no fork), and
// a given certificate's issuance is included.

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

// errLogCheck marks a failed transparency-log check: exit status 1.
var errLogCheck = errors.New("transparency log check failed")

func logCheckf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errLogCheck}, args...)...)
}

func runLog(ctx context.Context, a *app, args []string) error {
	return a.subcommand(ctx, "log", map[string]func(context.Context, *app, []string) error{
		"verify":  runLogVerify,
		"monitor": runLogMonitor,
	}, map[string]string{
		"verify":  "check the log's signed checkpoint, its consistency with the last one seen, and a certificate's inclusion",
		"monitor": "find certificates issued under your names that you did not request (incremental, from a state file)",
	}, args)
}

// logAPI is what log verification needs of the API.
type logAPI interface {
	Checkpoint(ctx context.Context) ([]byte, error)
	ConsistencyProof(ctx context.Context, oldSize, newSize int64) (*client.ConsistencyProof, error)
	InclusionProof(ctx context.Context, index, size int64) (*client.InclusionProof, error)
	LogEntries(ctx context.Context, start, end int64) (*client.LogEntries, error)
}

// logSource adapts the API client to rp.AuditLog (and rp.LogSource): it
// decodes the answers and checks they are for what was asked; rp verifies
// the rest.
type logSource struct{ api logAPI }

func (l logSource) Checkpoint(ctx context.Context) ([]byte, error) {
	msg, err := l.api.Checkpoint(ctx)
	if err != nil {
		return nil, explain("the log", err)
	}
	return msg, nil
}

func (l logSource) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
	p, err := l.api.ConsistencyProof(ctx, oldSize, newSize)
	if err != nil {
		return nil, explain("the log", err)
	}
	if p.Old != oldSize || p.New != newSize {
		return nil, logCheckf("the consistency proof is for sizes %d→%d, asked %d→%d", p.Old, p.New, oldSize, newSize)
	}
	hs, err := rp.ProofHashes(p.Proof)
	if err != nil {
		return nil, logCheckf("consistency proof: %v", err)
	}
	return tlog.TreeProof(hs), nil
}

func (l logSource) InclusionProof(ctx context.Context, index, size int64) (tlog.RecordProof, error) {
	p, err := l.api.InclusionProof(ctx, index, size)
	if err != nil {
		return nil, explain("the log", err)
	}
	if p.Index != index || p.Size != size {
		return nil, logCheckf("the inclusion proof is for entry %d in size %d, asked %d in %d", p.Index, p.Size, index, size)
	}
	hs, err := rp.ProofHashes(p.Proof)
	if err != nil {
		return nil, logCheckf("inclusion proof: %v", err)
	}
	return tlog.RecordProof(hs), nil
}

func (l logSource) Entries(ctx context.Context, start, end int64) ([][]byte, error) {
	page, err := l.api.LogEntries(ctx, start, end)
	if err != nil {
		return nil, explain("the log", err)
	}
	if page.Start != start {
		return nil, logCheckf("asked for entries from %d, got them from %d", start, page.Start)
	}
	return page.Entries, nil
}

type logVerifyOpts struct {
	origin    string
	stateFile string
	certFile  string
	full      bool
}

// logVerifyResult is what a successful run established.
type logVerifyResult struct {
	checkpoint translog.Checkpoint
	previous   *translog.Checkpoint // from the state file
	certIndex  int64                // -1 without --cert
	revokedAt  []int64              // revoke entries of the certificate (--full)
}

// verifyLog is rp.Auditor on the state file: the checkpoint is checked
// against the one saved there, which it then replaces, and the entries
// are checked as --full and --cert ask.
func verifyLog(ctx context.Context, api logAPI, key rp.LogKey, o logVerifyOpts) (*logVerifyResult, error) {
	var state []byte
	if o.stateFile != "" {
		data, err := agent.ReadFile(o.stateFile, translog.MaxCheckpointSize)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("reading the state file: %w", err)
		default:
			state = data
		}
	}
	var cert *x509.Certificate
	if o.certFile != "" {
		c, _, err := agent.LoadCertificate(o.certFile, "")
		if err != nil {
			return nil, err
		}
		cert = c
	}
	aud := rp.Auditor{Log: logSource{api}, Key: key, Origin: o.origin}
	cc, err := aud.Checkpoint(ctx, state)
	if err != nil {
		var ae *rp.AuditError
		if errors.As(err, &ae) && ae.Reason == rp.AuditBadPrevious {
			return nil, logCheckf("the state file %s does not hold a checkpoint signed by the pinned key: %v", o.stateFile, ae.Err)
		}
		return nil, logErr(err)
	}
	if o.stateFile != "" && !bytes.Equal(state, cc.Note) {
		if err := agent.WriteFile(o.stateFile, cc.Note, agent.CertFileMode, true); err != nil {
			return nil, fmt.Errorf("updating the state file: %w", err)
		}
	}
	res := &logVerifyResult{checkpoint: cc.Checkpoint, previous: cc.Previous, certIndex: -1}
	if !o.full && cert == nil {
		return res, nil
	}
	found, err := aud.Entries(ctx, cc, o.full, cert)
	if err != nil {
		var ae *rp.AuditError
		if errors.As(err, &ae) && ae.Reason == rp.AuditNotFound {
			return nil, logCheckf("no issuance entry for certificate %s (SHA-256 %s) in the log of size %d", o.certFile, ca.Fingerprint(cert), cc.Checkpoint.Size)
		}
		return nil, logErr(err)
	}
	res.certIndex, res.revokedAt = found.Index, found.RevokedAt
	return res, nil
}

// logErr marks an rp refusal of the log as a failed log check (exit
// status 1), with its message alone; other errors pass.
func logErr(err error) error {
	var ae *rp.AuditError
	if errors.As(err, &ae) {
		return logCheckf("%s", ae.Detail())
	}
	return err
}

func runLogVerify(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("log verify", "log verify --server URL --log-key FILE [--state FILE] [--cert FILE] [--full]",
		`Audit the transparency log:
  1. fetch the latest checkpoint (GET /v1/log/checkpoint) and check its C2SP
     signed-note signature with the pinned log key (--log-key: the PEM public
     key from GET /v1/log/key or DATA_DIR/ca/log-key.pem, or a verifier key
     string "<origin>+<id>+<key>");
  2. with --state: compare it with the checkpoint saved there by the previous
     run — a smaller tree (rollback) or a different root for the same size
     (fork) fails; a larger tree must be proven consistent
     (GET /v1/log/proof/consistency) — then save the new checkpoint there
     atomically (the file is created on the first run);
  3. with --full: fetch every entry, check each is a canonical log entry and
     that together they hash to the signed root (detects a tampered row),
     and that no version 1 entry (names in clear, before the upgrade)
     follows the first version 2 entry (blinded);
  4. with --cert: find the register/rotate entry holding the certificate's
     SHA-256 fingerprint (version 2 entries carry no name or certificate:
     the fingerprint is how an entry is found) and check its inclusion
     proof against the signed root (GET /v1/log/proof/inclusion).
The origin of a PEM key is --origin, else the state file's, else the
checkpoint's own first line (the key, not the name, is what is pinned).

Exit status: 0 all checks passed; 1 any check failed or an error (a server
error shows its code and request ID); 2 a usage error.`,
		`atr log verify --server https://127.0.0.1:8443 --ca-bundle ./var/ca/bundle.pem \
    --log-key ./var/ca/log-key.pem --state ~/.atr-log-state --cert agent.pem
atr log verify --server https://atr.example.org --log-key log.vkey --state log.state --full`)
	var o agentOpts
	o.bind(fs, a.lookupEnv, afServer|afCABundle)
	var keyFile string
	var lo logVerifyOpts
	envString(fs, a.lookupEnv, &keyFile, "log-key", "ATR_LOG_KEY_FILE", "", "pinned log public key: PEM or verifier key string (required)")
	envString(fs, a.lookupEnv, &lo.origin, "origin", "ATR_LOG_ORIGIN", "", "log origin for a PEM key (default: from the state file or checkpoint)")
	envString(fs, a.lookupEnv, &lo.stateFile, "state", "ATR_LOG_STATE", "", "file keeping the last verified checkpoint (created if missing)")
	fs.StringVar(&lo.certFile, "cert", "", "certificate whose issuance must be in the log")
	fs.BoolVar(&lo.full, "full", false, "fetch all entries and recompute the root")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	if keyFile == "" {
		return usagef("--log-key (ATR_LOG_KEY_FILE) is required")
	}
	key, err := rp.LoadLogKey(keyFile)
	if err != nil {
		return err
	}
	c, err := o.newClient("", nil)
	if err != nil {
		return err
	}
	res, err := verifyLog(ctx, c, key, lo)
	if err != nil {
		return err
	}
	cp := res.checkpoint
	fmt.Fprintf(a.stdout, "checkpoint: origin %s, size %d, root %s: signature OK\n", cp.Origin, cp.Size, cp.Hash)
	switch {
	case res.previous != nil:
		fmt.Fprintf(a.stdout, "consistent with the checkpoint seen before (size %d)\n", res.previous.Size)
	case lo.stateFile != "":
		fmt.Fprintf(a.stdout, "first checkpoint seen; saved to %s\n", lo.stateFile)
	}
	if lo.full {
		fmt.Fprintf(a.stdout, "all %d entries canonical; recomputed root matches\n", cp.Size)
	}
	if res.certIndex >= 0 {
		fmt.Fprintf(a.stdout, "certificate %s: issuance included at index %d\n", lo.certFile, res.certIndex)
		for _, i := range res.revokedAt {
			fmt.Fprintf(a.stdout, "certificate %s: revoked at index %d\n", lo.certFile, i)
		}
	}
	return nil
}
