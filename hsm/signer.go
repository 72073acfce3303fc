package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ThalesGroup/crypto11"
)

// Signer is a private key on the token. It implements crypto.Signer and
// stays valid across token recoveries: after the Token rebuilds its context
// the Signer finds its key again by CKA_ID and CKA_LABEL and refuses to sign
// unless the key still has the public key the Signer was created with.
// Every signature is checked against that public key before it is returned.
type Signer struct {
	t     *Token
	uri   URI
	label []byte
	id    []byte
	pub   crypto.PublicKey

	mu  sync.Mutex      // guards key and gen
	key crypto11.Signer // crypto11 key object of generation gen
	gen uint64
}

var _ crypto.Signer = (*Signer)(nil)

// URI names the key: the token (by label, or serial when the token was
// opened by serial), the object label and the CKA_ID.
func (s *Signer) URI() URI {
	u := s.uri
	u.ID = bytes.Clone(s.uri.ID)
	return u
}

// Public returns the public half, read from the token when the Signer was
// created.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Sign signs digest on the token (crypto.Signer). ECDSA signatures are ASN.1
// DER; RSA uses PKCS #1 v1.5, or PSS when opts is *rsa.PSSOptions. rand is
// ignored: the token supplies its own randomness. While the token is broken
// Sign fails at once with an error wrapping ErrUnavailable.
func (s *Signer) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	what := "signing with " + s.uri.String()
	if opts == nil {
		return nil, fmt.Errorf("hsm: %s: nil SignerOpts", what)
	}
	var sig []byte
	err := s.t.use(context.Background(), what, func(st *tokenState, gen uint64) error {
		key, err := s.keyFor(st, gen)
		if err != nil {
			return err
		}
		sig, err = key.Sign(rand, digest, opts)
		if err != nil {
			return err
		}
		if err := verifySignature(s.pub, digest, sig, opts); err != nil {
			// The token signed with something other than our key (a stale or
			// substituted object). Forget the object and fail closed.
			s.forget()
			return fmt.Errorf("hsm: %s: signature does not verify under the expected public key: %w: %w",
				what, ErrUnavailable, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sig, nil
}

// ChecksSignatures marks Signer as one that verifies every signature it
// returns under the key's public key and fails closed instead (Sign), so
// that callers need not verify again (ca.SelfCheckingSigner). A type that
// embeds *Signer and replaces Sign must not keep the mark: hide it with a
// field or method of the same name.
func (s *Signer) ChecksSignatures() {}

func (s *Signer) forget() {
	s.mu.Lock()
	s.key = nil
	s.mu.Unlock()
}

// keyFor returns the crypto11 key object for generation gen, finding it
// again after a rebuild. The caller holds s.t.mu for reading.
func (s *Signer) keyFor(st *tokenState, gen uint64) (crypto11.Signer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key != nil && s.gen == gen {
		return s.key, nil
	}
	key, err := findOne(st, s.id, s.label)
	if err != nil {
		return nil, err
	}
	if !publicEqual(key.Public(), s.pub) {
		return nil, fmt.Errorf("hsm: key %s now has a different public key: %w", s.uri.String(), ErrKeyNotFound)
	}
	s.key, s.gen = key, gen
	return key, nil
}

// findOne finds exactly one key pair by id and/or label (crypto11 answers
// an empty list, not an error, when nothing matches). Private objects are
// invisible to a session that lost its login, so before answering "not
// found" the login is probed: a logged-out token is token trouble
// (ErrUnavailable, rebuild), not a missing key.
func findOne(st *tokenState, id, label []byte) (crypto11.Signer, error) {
	if len(id) == 0 {
		id = nil
	}
	if len(label) == 0 {
		label = nil
	}
	keys, err := st.c11.FindKeyPairs(id, label)
	if err != nil {
		return nil, err
	}
	switch len(keys) {
	case 0:
		if err := st.probe(); err != nil {
			return nil, err
		}
		return nil, ErrKeyNotFound
	case 1:
		return keys[0], nil
	}
	return nil, fmt.Errorf("hsm: %d key pairs match id=%x label=%q: ambiguous", len(keys), id, label)
}

// Signer returns the key named by u. It fails with ErrKeyNotFound when no
// key pair matches, and refuses URIs that name another token or module,
// that match several keys, or keys of an unsupported type or size.
func (t *Token) Signer(ctx context.Context, u URI) (*Signer, error) {
	if u.Object == "" && len(u.ID) == 0 {
		return nil, errors.New("hsm: signer: URI names neither object nor id")
	}
	if u.ModulePath != "" && u.ModulePath != t.cfg.Module {
		return nil, fmt.Errorf("hsm: signer %s: module-path differs from the configured module", u.String())
	}
	var s *Signer
	err := t.use(ctx, "finding key "+u.String(), func(st *tokenState, gen uint64) error {
		if u.Token != "" && u.Token != st.label {
			return fmt.Errorf("hsm: signer %s: URI names token %q but %q is open", u.String(), u.Token, st.label)
		}
		if u.Serial != "" && u.Serial != st.serial {
			return fmt.Errorf("hsm: signer %s: URI names token serial %q but %q is open", u.String(), u.Serial, st.serial)
		}
		key, err := findOne(st, u.ID, []byte(u.Object))
		if err != nil {
			if errors.Is(err, ErrKeyNotFound) {
				return fmt.Errorf("hsm: key %s: %w", u.String(), ErrKeyNotFound)
			}
			return err
		}
		s, err = t.newSigner(st, gen, key)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// newSigner wraps a crypto11 key, reading its actual CKA_ID and CKA_LABEL so
// that it can be found again after a rebuild.
func (t *Token) newSigner(st *tokenState, gen uint64, key crypto11.Signer) (*Signer, error) {
	attrs, err := st.c11.GetAttributes(key, []crypto11.AttributeType{crypto11.CkaId, crypto11.CkaLabel})
	if err != nil {
		return nil, err
	}
	var id, label []byte
	if a := attrs[crypto11.CkaId]; a != nil {
		id = bytes.Clone(a.Value)
	}
	if a := attrs[crypto11.CkaLabel]; a != nil {
		label = bytes.Clone(a.Value)
	}
	if len(id) == 0 {
		return nil, errors.New("hsm: key has no CKA_ID; it cannot be found again reliably")
	}
	pub := key.Public()
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	u := URI{Object: string(label), ID: bytes.Clone(id)}
	if t.cfg.TokenLabel != "" {
		u.Token = st.label
	} else {
		u.Serial = st.serial
	}
	return &Signer{t: t, uri: u, label: label, id: id, pub: pub, key: key, gen: gen}, nil
}

// checkPublicKey accepts the key types ATR's CAs use.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("hsm: unsupported ECDSA curve %s: %w", k.Curve.Params().Name, ErrKeyPolicy)
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 && k.N.BitLen() <= 8192 {
			return nil
		}
		return fmt.Errorf("hsm: unsupported RSA key size %d: %w", k.N.BitLen(), ErrKeyPolicy)
	}
	return fmt.Errorf("hsm: unsupported public key type %T: %w", pub, ErrKeyPolicy)
}

func publicEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && b != nil && ea.Equal(b)
}

// verifySignature checks sig over digest with pub, as a relying party would.
func verifySignature(pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return errors.New("ECDSA signature invalid")
		}
		return nil
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			return rsa.VerifyPSS(k, pss.Hash, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: pss.Hash})
		}
		return rsa.VerifyPKCS1v15(k, opts.HashFunc(), digest, sig)
	}
	return fmt.Errorf("unsupported public key type %T", pub)
}
