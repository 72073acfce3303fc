package registry

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"github.com/agent-trust-registry/atr/registry/translog"

	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint returns the latest signed checkpoint of the transparency log as a
// C2SP signed note. A new checkpoint is signed on the token only when the log
// has grown since the last one, at most once a second per replica.
func (r *Registry) Checkpoint(ctx context.Context) ([]byte, error) {
	signed, err := r.tlog.checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	// The witness cosignatures stored for it follow the log's signatures
	// (witnesslog.go); a checkpoint no witness has cosigned yet has none.
	return r.withCosignatures(ctx, signed)
}

// LogKeyPEM returns the log's public key (PKIX, PEM) or nil when the registry
// has no log key configured.
func (r *Registry) LogKeyPEM() []byte {
	if r.cfg.LogPublicKey == nil {
		return nil
	}
	der, err := x509.MarshalPKIXPublicKey(r.cfg.LogPublicKey)
	if err != nil {
		r.log.WithError(err).Error("registry: marshaling log public key")
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// LogVerifierKey returns the C2SP signed-note verifier key of the log
// (followed, when the log also has an Ed25519 key, by a newline and that
// key's "<origin>+<key ID>+<base64(0x01 || key)>"),
// "<origin>+<8 hex digits key ID>+<base64(0x02 || SPKI DER)>", or "" when the
// log key is not configured. Verifiers that know signature type 0x02 (ECDSA
// P-256) read it, e.g. transparency-dev/formats/note.NewVerifier;
// golang.org/x/mod/sumdb/note knows only Ed25519 and refuses it.
func (r *Registry) LogVerifierKey() string {
	if r.cfg.LogPublicKey == nil {
		return ""
	}
	vkey, err := translog.VerifierKey(r.cfg.LogOrigin, r.cfg.LogPublicKey)
	if err != nil {
		r.log.WithError(err).Error("registry: log verifier key")
		return ""
	}
	if r.cfg.LogPublicKeyEd25519 == nil {
		return vkey
	}
	// The Ed25519 key (type 0x01) that witnesses verify follows on a second
	// line.
	ed, err := translog.Ed25519VerifierKey(r.cfg.LogOrigin, r.cfg.LogPublicKeyEd25519)
	if err != nil {
		r.log.WithError(err).Error("registry: log Ed25519 verifier key")
		return vkey
	}
	return vkey + "\n" + ed
}

// LogEntries returns the encoded log entries [start, end), at most 1000. A
// range that runs past the current tree size is ErrNotFound.
func (r *Registry) LogEntries(ctx context.Context, start, end int64) ([][]byte, error) {
	return r.tlog.entries(ctx, start, end)
}

// InclusionProof proves that entry index is in the tree of the given size.
func (r *Registry) InclusionProof(ctx context.Context, index, size int64) ([]tlog.Hash, error) {
	return r.tlog.inclusionProof(ctx, index, size)
}

// ConsistencyProof proves that the tree of size oldSize is a prefix of the
// tree of size newSize.
func (r *Registry) ConsistencyProof(ctx context.Context, oldSize, newSize int64) ([]tlog.Hash, error) {
	return r.tlog.consistencyProof(ctx, oldSize, newSize)
}

// Tile returns a C2SP tlog-tiles resource (a hash tile or an entry bundle)
// for a path below the log's tile prefix, e.g. "tile/0/000" or
// "tile/entries/x001/234.p/7".
func (r *Registry) Tile(ctx context.Context, path string) ([]byte, error) {
	b, err := r.tlog.tile(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("registry: tile %q: %w", path, err)
	}
	return b, nil
}
