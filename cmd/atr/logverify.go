package main

// logverify.go is `atr log verify`, the auditor's and relying party's check of
// the transparency log: the latest checkpoint is signed by the pinned log key,
// it extends the last checkpoint this client saw (no rollback, no fork), and
// a given certificate's issuance is included.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry/translog"
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

// logKey is a pinned log key: a C2SP verifier key string (which names the
// origin) or a PEM public key (origin from --origin, the state file or the
// checkpoint itself; the key is what is pinned, since a type 0x02 key ID does
// not cover the name).
type logKey struct {
	verifier note.Verifier // from a vkey
	pub      any           // from PEM
}

func loadLogKey(path string) (logKey, error) {
	data, err := readFileCapped(path, 64<<10)
	if err != nil {
		return logKey{}, fmt.Errorf("reading the log key: %w", err)
	}
	if b, rest := pem.Decode(data); b != nil {
		if b.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
			return logKey{}, fmt.Errorf("log key %s: want one PEM \"PUBLIC KEY\" block or a verifier key string", path)
		}
		pub, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return logKey{}, fmt.Errorf("log key %s: %w", path, err)
		}
		return logKey{pub: pub}, nil
	}
	// GET /v1/log/vkey serves the ECDSA key on the first line (then the
	// Ed25519 key for witnesses, which checkpoints also carry).
	first, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	v, err := translog.ParseVerifierKey(strings.TrimSpace(first))
	if err != nil {
		return logKey{}, fmt.Errorf("log key %s: neither PEM nor a verifier key: %w", path, err)
	}
	return logKey{verifier: v}, nil
}

// verifierFor returns the note verifier for origin (PEM keys) or the vkey's.
func (k logKey) verifierFor(origin string) (note.Verifier, error) {
	if k.verifier != nil {
		if origin != "" && origin != k.verifier.Name() {
			return nil, logCheckf("the log key names origin %q, not %q", k.verifier.Name(), origin)
		}
		return k.verifier, nil
	}
	v, err := translog.NewNoteVerifier(origin, k.pub)
	if err != nil {
		return nil, fmt.Errorf("log key: %w", err)
	}
	return v, nil
}

// noteOrigin is the first line of a note (the checkpoint origin).
func noteOrigin(msg []byte) string {
	line, _, _ := bytes.Cut(msg, []byte("\n"))
	return string(line)
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

func verifyLog(ctx context.Context, api logAPI, key logKey, o logVerifyOpts) (*logVerifyResult, error) {
	res := &logVerifyResult{certIndex: -1}
	var state []byte
	if o.stateFile != "" {
		data, err := readFileCapped(o.stateFile, translog.MaxCheckpointSize)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("reading the state file: %w", err)
		default:
			state = data
		}
	}
	msg, err := api.Checkpoint(ctx)
	if err != nil {
		return nil, explain("fetching the checkpoint", err)
	}
	origin := o.origin
	if origin == "" && key.verifier != nil {
		origin = key.verifier.Name()
	}
	if origin == "" && state != nil {
		origin = noteOrigin(state)
	}
	if origin == "" {
		origin = noteOrigin(msg)
	}
	v, err := key.verifierFor(origin)
	if err != nil {
		return nil, err
	}

	// Step 1: the checkpoint is signed by the pinned key.
	cp, err := translog.OpenCheckpoint(msg, v)
	if err != nil {
		return nil, logCheckf("the checkpoint does not verify with the pinned log key (origin %q): %v", origin, err)
	}
	res.checkpoint = cp

	// Step 2: it extends the last checkpoint seen.
	if state != nil {
		old, err := translog.OpenCheckpoint(state, v)
		if err != nil {
			return nil, logCheckf("the state file %s does not hold a checkpoint signed by the pinned key: %v", o.stateFile, err)
		}
		res.previous = &old
		switch {
		case cp.Size < old.Size:
			return nil, logCheckf("rollback: the log shrank from %d to %d entries", old.Size, cp.Size)
		case cp.Size == old.Size:
			if cp.Hash != old.Hash {
				return nil, logCheckf("fork: two different trees of size %d (root %s, earlier %s)", cp.Size, cp.Hash, old.Hash)
			}
		case old.Size > 0:
			p, err := api.ConsistencyProof(ctx, old.Size, cp.Size)
			if err != nil {
				return nil, explain("fetching the consistency proof", err)
			}
			if p.Old != old.Size || p.New != cp.Size {
				return nil, logCheckf("the consistency proof is for sizes %d→%d, asked %d→%d", p.Old, p.New, old.Size, cp.Size)
			}
			proof, err := toHashes(p.Proof)
			if err != nil {
				return nil, logCheckf("consistency proof: %v", err)
			}
			if err := translog.CheckConsistency(tlog.TreeProof(proof), cp.Size, cp.Hash, old.Size, old.Hash); err != nil {
				return nil, logCheckf("the tree of size %d does not extend the one of size %d seen earlier: %v", cp.Size, old.Size, err)
			}
		}
	}
	if o.stateFile != "" && !bytes.Equal(state, msg) {
		if err := writeAtomic(o.stateFile, msg, agentCertMode, true); err != nil {
			return nil, fmt.Errorf("updating the state file: %w", err)
		}
	}

	// Step 3 (--full): every entry is canonical and the entries hash to the root.
	var fp string
	var cert *x509.Certificate
	if o.certFile != "" {
		c, _, err := loadAgentCert(o.certFile, "")
		if err != nil {
			return nil, err
		}
		cert, fp = c, certFingerprint(c)
	}
	if o.full {
		var stored []tlog.Hash
		var order entryOrder
		err := scanEntries(ctx, api, cp.Size, func(i int64, data []byte) error {
			e, err := translog.ParseEntry(data)
			if err != nil {
				return logCheckf("entry %d is not a canonical log entry: %v", i, err)
			}
			if err := order.check(i, e); err != nil {
				return err
			}
			hs, err := tlog.StoredHashes(i, data, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
				out := make([]tlog.Hash, len(idx))
				for j, x := range idx {
					out[j] = stored[x]
				}
				return out, nil
			}))
			if err != nil {
				return fmt.Errorf("hashing entry %d: %w", i, err)
			}
			stored = append(stored, hs...)
			if fp != "" && e.Fingerprint == fp {
				switch e.Type {
				case translog.EventRegister, translog.EventRotate:
					if res.certIndex < 0 {
						res.certIndex = i
					}
				case translog.EventRevoke:
					res.revokedAt = append(res.revokedAt, i)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		root, err := tlog.TreeHash(cp.Size, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for j, x := range idx {
				out[j] = stored[x]
			}
			return out, nil
		}))
		if err != nil {
			return nil, fmt.Errorf("computing the root: %w", err)
		}
		if root != cp.Hash {
			return nil, logCheckf("the %d entries served hash to root %s, but the signed checkpoint says %s", cp.Size, root, cp.Hash)
		}
	}

	// Step 4 (--cert): the certificate's issuance entry is included.
	if fp == "" {
		return res, nil
	}
	if res.certIndex < 0 && !o.full {
		errFound := errors.New("found")
		var order entryOrder
		err := scanEntries(ctx, api, cp.Size, func(i int64, data []byte) error {
			e, err := translog.ParseEntry(data)
			if err == nil {
				if err := order.check(i, e); err != nil {
					return err
				}
			}
			if err == nil && e.Fingerprint == fp && (e.Type == translog.EventRegister || e.Type == translog.EventRotate) {
				res.certIndex = i
				return errFound
			}
			return nil
		})
		if err != nil && !errors.Is(err, errFound) {
			return nil, err
		}
	}
	if res.certIndex < 0 {
		return nil, logCheckf("no issuance entry for certificate %s (SHA-256 %s) in the log of size %d", o.certFile, fp, cp.Size)
	}
	page, err := api.LogEntries(ctx, res.certIndex, res.certIndex+1)
	if err != nil {
		return nil, explain("fetching the certificate's log entry", err)
	}
	if page.Start != res.certIndex || len(page.Entries) != 1 {
		return nil, logCheckf("the server answered entries from %d (%d of them) for index %d", page.Start, len(page.Entries), res.certIndex)
	}
	leaf := page.Entries[0]
	e, err := translog.ParseEntry(leaf)
	if err != nil || e.Fingerprint != fp {
		return nil, logCheckf("entry %d changed between reads", res.certIndex)
	}
	if len(e.Certificate) > 0 && !bytes.Equal(e.Certificate, cert.Raw) {
		return nil, logCheckf("entry %d carries a different certificate with the same fingerprint", res.certIndex)
	}
	ip, err := api.InclusionProof(ctx, res.certIndex, cp.Size)
	if err != nil {
		return nil, explain("fetching the inclusion proof", err)
	}
	if ip.Index != res.certIndex || ip.Size != cp.Size {
		return nil, logCheckf("the inclusion proof is for entry %d in size %d, asked %d in %d", ip.Index, ip.Size, res.certIndex, cp.Size)
	}
	proof, err := toHashes(ip.Proof)
	if err != nil {
		return nil, logCheckf("inclusion proof: %v", err)
	}
	if err := translog.CheckInclusion(tlog.RecordProof(proof), cp.Size, cp.Hash, res.certIndex, translog.LeafHash(leaf)); err != nil {
		return nil, logCheckf("entry %d is not included in the signed tree of size %d: %v", res.certIndex, cp.Size, err)
	}
	return res, nil
}

// entryOrder enforces the cut-over from entry version 1 to version 2
// (docs/transparency.md, "The log before version 2"): version 1 leaves are
// accepted only before the first version 2 leaf.
type entryOrder struct {
	firstV2 int64 // index of the first version 2 leaf, when seen
	seen    bool
}

func (o *entryOrder) check(i int64, e translog.Entry) error {
	switch {
	case e.Version == translog.EntryVersion && !o.seen:
		o.firstV2, o.seen = i, true
	case e.Version == translog.EntryVersion1 && o.seen:
		return logCheckf("entry %d is a version 1 entry after the first version 2 entry (%d): the log went back to publishing names", i, o.firstV2)
	}
	return nil
}

// scanEntries calls f for every entry [0, size) in order, fetching pages and
// refusing answers that do not start where asked or are empty.
func scanEntries(ctx context.Context, api logAPI, size int64, f func(i int64, data []byte) error) error {
	for next := int64(0); next < size; {
		page, err := api.LogEntries(ctx, next, size)
		if err != nil {
			return explain(fmt.Sprintf("fetching log entries from %d", next), err)
		}
		if page.Start != next || len(page.Entries) == 0 || int64(len(page.Entries)) > size-next {
			return logCheckf("asked for entries from %d, got %d from %d", next, len(page.Entries), page.Start)
		}
		for _, data := range page.Entries {
			if err := f(next, data); err != nil {
				return err
			}
			next++
		}
	}
	return nil
}

func toHashes(raw [][]byte) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(raw))
	for i, h := range raw {
		if len(h) != len(tlog.Hash{}) {
			return nil, fmt.Errorf("hash %d has %d bytes, want %d", i, len(h), len(tlog.Hash{}))
		}
		copy(out[i][:], h)
	}
	return out, nil
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
	key, err := loadLogKey(keyFile)
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
