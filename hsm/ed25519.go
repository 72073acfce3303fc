package hsm

// Ed25519 keys on the token. crypto11 knows no Ed25519, so this file drives
// the token with raw miekg/pkcs11 calls: CKM_EC_EDWARDS_KEY_PAIR_GEN to
// generate (CKA_EC_PARAMS = DER of the OID 1.3.101.112, id-Ed25519, which
// SoftHSM2 2.6 accepts as well as the printable string "edwards25519") and
// CKM_EDDSA to sign the whole message (pure Ed25519, RFC 8032).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// PKCS#11 v3.0 constants that miekg/pkcs11 v1.1.2 does not define.
const (
	ckkECEdwards            = 0x40   // CKK_EC_EDWARDS
	ckmECEdwardsKeyPairGen  = 0x1055 // CKM_EC_EDWARDS_KEY_PAIR_GEN
	ckmEdDSA                = 0x1057 // CKM_EDDSA
	ed25519ParamsDescriptor = "id-Ed25519 (1.3.101.112)"
)

// ed25519Params is CKA_EC_PARAMS for Ed25519: DER of OID 1.3.101.112.
var ed25519Params = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}

// Ed25519Signer is an Ed25519 private key on the token. It implements
// crypto.Signer: Public returns an ed25519.PublicKey, and Sign signs the
// full message (opts.HashFunc() must be crypto.Hash(0); Ed25519ph and
// Ed25519ctx are refused). Like Signer it survives token recoveries: Sign
// keeps one session and the key's handle for each generation of the token
// (as crypto11 keeps Signer's), finds the key again by CKA_ID and CKA_LABEL
// in a new generation and whenever the kept handle or session fails, and
// checks every signature with ed25519.Verify against the public key read
// when the Ed25519Signer was made, so a substituted key fails closed.
//
// Finding the key for every signature cost a session and a search of the
// token per checkpoint; on SoftHSM2 the search opens and reads the file of
// every object on the token (TestEd25519SignKeepsItsSession).
type Ed25519Signer struct {
	t     *Token
	uri   URI
	label []byte
	id    []byte
	pub   ed25519.PublicKey

	// mu guards kept. A Sign that finds it held signs in a session of its
	// own instead of waiting.
	mu   sync.Mutex
	kept *ed25519Session
}

// ed25519Session is the session and key handle Sign keeps, valid only with
// the token state st they were opened in (tokenState.openKept; a recovery
// or Token.Close closes the state and the session with it).
type ed25519Session struct {
	st   *tokenState
	sh   pkcs11.SessionHandle
	priv pkcs11.ObjectHandle
}

var _ crypto.Signer = (*Ed25519Signer)(nil)

// URI names the key (token, object label and CKA_ID).
func (s *Ed25519Signer) URI() URI {
	u := s.uri
	u.ID = bytes.Clone(s.uri.ID)
	return u
}

// Public returns the ed25519.PublicKey read from the token.
func (s *Ed25519Signer) Public() crypto.PublicKey { return ed25519.PublicKey(bytes.Clone(s.pub)) }

// Sign signs msg (the message itself, not a digest) with CKM_EDDSA on the
// token. rand is ignored. While the token is broken Sign fails at once with
// an error wrapping ErrUnavailable.
func (s *Ed25519Signer) Sign(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	what := "signing with " + s.uri.String()
	if opts == nil || opts.HashFunc() != crypto.Hash(0) {
		return nil, fmt.Errorf("hsm: %s: Ed25519 signs the message itself; want crypto.Hash(0)", what)
	}
	if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
		return nil, fmt.Errorf("hsm: %s: Ed25519ctx is not supported", what)
	}
	var sig []byte
	err := s.t.use(context.Background(), what, func(st *tokenState, _ uint64) error {
		if !s.mu.TryLock() {
			return st.withSession(func(sh pkcs11.SessionHandle) error {
				priv, err := s.findPrivate(st, sh)
				if err != nil {
					return err
				}
				sig, err = s.signIn(st, sh, priv, msg, what)
				return err
			})
		}
		defer s.mu.Unlock()
		if k := s.kept; k != nil && k.st == st {
			var err error
			if sig, err = s.signIn(st, k.sh, k.priv, msg, what); err == nil {
				return nil
			}
			st.closeKept(k.sh, err)
			s.kept = nil
			// A key handle the token no longer knows (the key was destroyed
			// or replaced) is looked up again at once, which reports what
			// is there now; any other failure is the token's trouble or a
			// bad signature, for use to handle as before.
			if !isP11(err, pkcs11.CKR_KEY_HANDLE_INVALID) && !isP11(err, pkcs11.CKR_OBJECT_HANDLE_INVALID) {
				return err
			}
		}
		// A session kept in an earlier token state was closed with it.
		s.kept = nil
		sh, err := st.openKept()
		if err != nil {
			return err
		}
		priv, err := s.findPrivate(st, sh)
		if err == nil {
			sig, err = s.signIn(st, sh, priv, msg, what)
		}
		if err != nil {
			st.closeKept(sh, err)
			return err
		}
		s.kept = &ed25519Session{st: st, sh: sh, priv: priv}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sig, nil
}

// ChecksSignatures marks Ed25519Signer as one that verifies every signature
// it returns under the key's public key and fails closed instead (signIn),
// as Signer.ChecksSignatures does, so that callers need not verify again
// (translog's note signers). A type that embeds *Ed25519Signer and replaces
// Sign must not keep the mark: hide it with a field or method of the same
// name.
func (s *Ed25519Signer) ChecksSignatures() {}

// signIn signs msg with the private key priv in session sh and checks the
// signature against s's public key.
func (s *Ed25519Signer) signIn(st *tokenState, sh pkcs11.SessionHandle, priv pkcs11.ObjectHandle, msg []byte, what string) ([]byte, error) {
	if err := st.raw.SignInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdDSA, nil)}, priv); err != nil {
		return nil, err
	}
	sig, err := st.raw.Sign(sh, msg)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(s.pub, msg, sig) {
		return nil, fmt.Errorf("hsm: %s: signature does not verify under the expected public key: %w", what, ErrUnavailable)
	}
	return sig, nil
}

// findPrivate finds the one Ed25519 private key with s's CKA_ID and label.
func (s *Ed25519Signer) findPrivate(st *tokenState, sh pkcs11.SessionHandle) (pkcs11.ObjectHandle, error) {
	hs, err := st.find(sh, ed25519Template(pkcs11.CKO_PRIVATE_KEY, s.id, s.label))
	if err != nil {
		return 0, err
	}
	switch len(hs) {
	case 0:
		if err := st.probe(); err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("hsm: key %s: %w", s.uri.String(), ErrKeyNotFound)
	case 1:
		return hs[0], nil
	}
	return 0, fmt.Errorf("hsm: key %s: %d private keys match: ambiguous", s.uri.String(), len(hs))
}

func ed25519Template(class uint, id, label []byte) []*pkcs11.Attribute {
	t := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
	}
	if len(id) > 0 {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	if len(label) > 0 {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	return t
}

// GenerateEd25519Key creates an Ed25519 key pair on the token with the given
// CKA_LABEL and a random CKA_ID, with the attribute policy of GenerateKey
// (sensitive, never extractable, sign-only; the public half may only
// verify). It fails with ErrExists when any object already has the label,
// and checks the attributes the token actually set before returning.
func (t *Token) GenerateEd25519Key(ctx context.Context, label string) (*Ed25519Signer, error) {
	if err := checkLabel(label); err != nil {
		return nil, err
	}
	t.createMu.Lock()
	defer t.createMu.Unlock()

	var s *Ed25519Signer
	what := fmt.Sprintf("generating %s key %q", Ed25519, label)
	err := t.use(ctx, what, func(st *tokenState, _ uint64) error {
		if err := st.probe(); err != nil {
			return err
		}
		n, err := st.count([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)})
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("hsm: %s: label is taken by %d object(s): %w", what, n, ErrExists)
		}
		id, err := st.freeID()
		if err != nil {
			return err
		}
		pubSet, privSet, err := keyTemplates(id, label)
		if err != nil {
			return err
		}
		pubT := append(pubSet.ToSlice(),
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, ed25519Params))
		privT := append(privSet.ToSlice(),
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards))
		sh, err := st.raw.OpenSession(st.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return err
		}
		defer func() { _ = st.raw.CloseSession(sh) }()
		_, priv, err := st.raw.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmECEdwardsKeyPairGen, nil)}, pubT, privT)
		if err != nil {
			return fmt.Errorf("hsm: %s (CKA_EC_PARAMS %s): %w", what, ed25519ParamsDescriptor, err)
		}
		if err := checkRawKeyAttributes(st, sh, priv); err != nil {
			return fmt.Errorf("hsm: %s: token did not apply the requested attributes: %w", what, err)
		}
		s, err = t.newEd25519Signer(st, sh, id, []byte(label))
		return err
	})
	if err != nil {
		return nil, err
	}
	t.log.WithField("key", s.uri.String()).Info("hsm: key generated")
	return s, nil
}

// Ed25519Signer returns the Ed25519 key named by u (by object label and/or
// id). It fails with ErrKeyNotFound when no Ed25519 key pair matches, and
// refuses URIs that name another token or module or match several keys.
func (t *Token) Ed25519Signer(ctx context.Context, u URI) (*Ed25519Signer, error) {
	if u.Object == "" && len(u.ID) == 0 {
		return nil, errors.New("hsm: signer: URI names neither object nor id")
	}
	if u.ModulePath != "" && u.ModulePath != t.cfg.Module {
		return nil, fmt.Errorf("hsm: signer %s: module-path differs from the configured module", u.String())
	}
	var s *Ed25519Signer
	err := t.use(ctx, "finding key "+u.String(), func(st *tokenState, _ uint64) error {
		if u.Token != "" && u.Token != st.label {
			return fmt.Errorf("hsm: signer %s: URI names token %q but %q is open", u.String(), u.Token, st.label)
		}
		if u.Serial != "" && u.Serial != st.serial {
			return fmt.Errorf("hsm: signer %s: URI names token serial %q but %q is open", u.String(), u.Serial, st.serial)
		}
		return st.withSession(func(sh pkcs11.SessionHandle) error {
			hs, err := st.find(sh, ed25519Template(pkcs11.CKO_PRIVATE_KEY, u.ID, []byte(u.Object)))
			if err != nil {
				return err
			}
			switch {
			case len(hs) == 0:
				if err := st.probe(); err != nil {
					return err
				}
				return fmt.Errorf("hsm: key %s: %w", u.String(), ErrKeyNotFound)
			case len(hs) > 1:
				return fmt.Errorf("hsm: key %s: %d Ed25519 keys match: ambiguous", u.String(), len(hs))
			}
			id, _, err := st.attr(sh, hs[0], pkcs11.CKA_ID)
			if err != nil {
				return err
			}
			label, _, err := st.attr(sh, hs[0], pkcs11.CKA_LABEL)
			if err != nil {
				return err
			}
			if len(id) == 0 {
				return errors.New("hsm: key has no CKA_ID; it cannot be found again reliably")
			}
			s, err = t.newEd25519Signer(st, sh, bytes.Clone(id), bytes.Clone(label))
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// CheckPolicy is the start-up check for an Ed25519 key: the private key on
// the token must satisfy the attribute policy CheckKey enforces for CA keys
// (sensitive, never extractable, sign-only). Violations wrap ErrKeyPolicy.
func (s *Ed25519Signer) CheckPolicy(ctx context.Context) error {
	what := "checking key " + s.uri.String()
	return s.t.use(ctx, what, func(st *tokenState, _ uint64) error {
		return st.withSession(func(sh pkcs11.SessionHandle) error {
			priv, err := s.findPrivate(st, sh)
			if err != nil {
				return err
			}
			if err := checkRawKeyAttributes(st, sh, priv); err != nil {
				return fmt.Errorf("hsm: %s: %w", what, err)
			}
			return nil
		})
	})
}

// newEd25519Signer reads the public key of the pair (id, label).
func (t *Token) newEd25519Signer(st *tokenState, sh pkcs11.SessionHandle, id, label []byte) (*Ed25519Signer, error) {
	hs, err := st.find(sh, ed25519Template(pkcs11.CKO_PUBLIC_KEY, id, label))
	if err != nil {
		return nil, err
	}
	if len(hs) != 1 {
		return nil, fmt.Errorf("hsm: Ed25519 key %q: %d public keys match, want 1", label, len(hs))
	}
	point, ok, err := st.attr(sh, hs[0], pkcs11.CKA_EC_POINT)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("hsm: Ed25519 key %q: public key has no CKA_EC_POINT", label)
	}
	pub, err := parseEd25519Point(point)
	if err != nil {
		return nil, fmt.Errorf("hsm: Ed25519 key %q: %w", label, err)
	}
	u := URI{Object: string(label), ID: bytes.Clone(id)}
	if t.cfg.TokenLabel != "" {
		u.Token = st.label
	} else {
		u.Serial = st.serial
	}
	return &Ed25519Signer{t: t, uri: u, label: label, id: id, pub: pub}, nil
}

// parseEd25519Point decodes CKA_EC_POINT: PKCS#11 v3.0 says a DER OCTET
// STRING holding the 32-byte public key (SoftHSM2 does this); some tokens
// return the 32 raw bytes.
func parseEd25519Point(v []byte) (ed25519.PublicKey, error) {
	if len(v) == ed25519.PublicKeySize {
		return ed25519.PublicKey(bytes.Clone(v)), nil
	}
	var raw []byte
	rest, err := asn1.Unmarshal(v, &raw)
	if err != nil || len(rest) != 0 || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("CKA_EC_POINT of %d bytes is not an Ed25519 public key: %w", len(v), ErrKeyPolicy)
	}
	return ed25519.PublicKey(raw), nil
}

// checkRawKeyAttributes applies keyPolicyAttrs to a private key object
// found with raw PKCS#11 calls (checkKeyAttributes does it for crypto11
// keys).
func checkRawKeyAttributes(st *tokenState, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
	var bad []string
	for _, a := range keyPolicyAttrs() {
		v, ok, err := st.attr(sh, h, a.typ)
		if err != nil {
			return err
		}
		if !ok || len(v) != 1 {
			bad = append(bad, a.name+" unreadable")
			continue
		}
		if got := v[0] != 0; got != a.want {
			bad = append(bad, fmt.Sprintf("%s=%t (want %t)", a.name, got, a.want))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrKeyPolicy, strings.Join(bad, ", "))
	}
	return nil
}
