package hsm

import (
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// KeyAlgorithm names a key type GenerateKey can create.
type KeyAlgorithm string

// The key algorithms ATR's CAs use.
const (
	ECDSAP256 KeyAlgorithm = "ecdsa-p256"
	ECDSAP384 KeyAlgorithm = "ecdsa-p384"
	// RSA2048 is for the name-index VRF key only (a CA key must be
	// stronger); KeyAlgorithms does not list it.
	RSA2048 KeyAlgorithm = "rsa-2048"
	RSA3072 KeyAlgorithm = "rsa-3072"
	RSA4096 KeyAlgorithm = "rsa-4096"
	// Ed25519 keys are made by GenerateEd25519Key and used through
	// Ed25519Signer (crypto11 has no Ed25519); GenerateKey refuses it and
	// KeyAlgorithms does not list it.
	Ed25519 KeyAlgorithm = "ed25519"
)

// KeyAlgorithms lists the supported algorithms, in the order a usage message
// should show them.
func KeyAlgorithms() []KeyAlgorithm { return []KeyAlgorithm{ECDSAP256, ECDSAP384, RSA3072, RSA4096} }

// ParseKeyAlgorithm checks s (e.g. a flag value) against KeyAlgorithms.
func ParseKeyAlgorithm(s string) (KeyAlgorithm, error) {
	for _, a := range KeyAlgorithms() {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("hsm: unknown key algorithm %q (want one of ecdsa-p256, ecdsa-p384, rsa-3072, rsa-4096)", s)
}

const (
	idLength       = 16 // bytes of random CKA_ID
	maxLabelLength = 128
)

func checkLabel(label string) error {
	if label == "" || len(label) > maxLabelLength || !utf8.ValidString(label) ||
		strings.ContainsFunc(label, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("hsm: invalid label %q: want 1 to %d bytes of UTF-8 without control characters", truncate(label), maxLabelLength)
	}
	return nil
}

// GenerateKey creates a key pair on the token with the given CKA_LABEL and a
// random 16-byte CKA_ID. The private half has CKA_TOKEN, CKA_PRIVATE,
// CKA_SENSITIVE and CKA_SIGN true and CKA_EXTRACTABLE, CKA_DECRYPT,
// CKA_UNWRAP, CKA_DERIVE, CKA_SIGN_RECOVER false; the public half may only
// verify. It fails with ErrExists when any object on the token already has
// the label (the token is never overwritten), and checks the attributes the
// token actually set before returning the Signer.
func (t *Token) GenerateKey(ctx context.Context, label string, alg KeyAlgorithm) (*Signer, error) {
	if err := checkLabel(label); err != nil {
		return nil, err
	}
	var curve elliptic.Curve
	var bits int
	switch alg {
	case ECDSAP256:
		curve = elliptic.P256()
	case ECDSAP384:
		curve = elliptic.P384()
	case RSA2048:
		bits = 2048
	case RSA3072:
		bits = 3072
	case RSA4096:
		bits = 4096
	case Ed25519:
		return nil, fmt.Errorf("hsm: generating %s key %q: use GenerateEd25519Key", alg, label)
	default:
		_, err := ParseKeyAlgorithm(string(alg))
		return nil, err
	}
	t.createMu.Lock()
	defer t.createMu.Unlock()

	var s *Signer
	what := fmt.Sprintf("generating %s key %q", alg, label)
	err := t.use(ctx, what, func(st *tokenState, gen uint64) error {
		// A logged-out session cannot see private objects; never decide
		// that a label is free on such a view.
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
		pub, priv, err := keyTemplates(id, label)
		if err != nil {
			return err
		}
		var key crypto11.Signer
		if curve != nil {
			key, err = st.c11.GenerateECDSAKeyPairWithAttributes(pub, priv, curve)
		} else {
			key, err = st.c11.GenerateRSAKeyPairWithAttributes(pub, priv, bits)
		}
		if err != nil {
			return fmt.Errorf("hsm: %s: %w", what, err)
		}
		if err := checkKeyAttributes(st, key); err != nil {
			return fmt.Errorf("hsm: %s: token did not apply the requested attributes: %w", what, err)
		}
		s, err = t.newSigner(st, gen, key)
		return err
	})
	if err != nil {
		return nil, err
	}
	t.log.WithField("key", s.uri.String()).Info("hsm: key generated")
	return s, nil
}

// keyTemplates returns the public and private attribute templates.
func keyTemplates(id []byte, label string) (pub, priv crypto11.AttributeSet, err error) {
	pub, err = crypto11.NewAttributeSetWithIDAndLabel(id, []byte(label))
	if err != nil {
		return nil, nil, err
	}
	priv, err = crypto11.NewAttributeSetWithIDAndLabel(id, []byte(label))
	if err != nil {
		return nil, nil, err
	}
	for typ, v := range map[crypto11.AttributeType]bool{
		pkcs11.CKA_TOKEN:   true,
		pkcs11.CKA_PRIVATE: false,
		pkcs11.CKA_VERIFY:  true,
		pkcs11.CKA_ENCRYPT: false,
		pkcs11.CKA_WRAP:    false,
	} {
		if err := pub.Set(typ, v); err != nil {
			return nil, nil, err
		}
	}
	for typ, v := range map[crypto11.AttributeType]bool{
		pkcs11.CKA_TOKEN:        true,
		pkcs11.CKA_PRIVATE:      true,
		pkcs11.CKA_SENSITIVE:    true,
		pkcs11.CKA_EXTRACTABLE:  false,
		pkcs11.CKA_SIGN:         true,
		pkcs11.CKA_SIGN_RECOVER: false,
		pkcs11.CKA_DECRYPT:      false,
		pkcs11.CKA_UNWRAP:       false,
		pkcs11.CKA_DERIVE:       false,
	} {
		if err := priv.Set(typ, v); err != nil {
			return nil, nil, err
		}
	}
	return pub, priv, nil
}

// freeID returns a random CKA_ID no object on the token has.
func (st *tokenState) freeID() ([]byte, error) {
	for range 4 {
		id := make([]byte, idLength)
		_, _ = rand.Read(id) // crypto/rand.Read never fails
		n, err := st.count([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)})
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return id, nil
		}
	}
	return nil, fmt.Errorf("hsm: no free CKA_ID after 4 random tries")
}

// count returns how many objects match template.
func (st *tokenState) count(template []*pkcs11.Attribute) (int, error) {
	var n int
	err := st.withSession(func(sh pkcs11.SessionHandle) error {
		hs, err := st.find(sh, template)
		n = len(hs)
		return err
	})
	return n, err
}

// find returns every object matching template.
func (st *tokenState) find(sh pkcs11.SessionHandle, template []*pkcs11.Attribute) (hs []pkcs11.ObjectHandle, err error) {
	if err := st.raw.FindObjectsInit(sh, template); err != nil {
		return nil, err
	}
	defer func() {
		if ferr := st.raw.FindObjectsFinal(sh); err == nil {
			err = ferr
		}
	}()
	for {
		batch, _, err := st.raw.FindObjects(sh, 64)
		if err != nil {
			return nil, err
		}
		if len(batch) == 0 {
			return hs, nil
		}
		hs = append(hs, batch...)
	}
}

type wantAttr struct {
	typ  crypto11.AttributeType
	name string
	want bool
}

// keyPolicyAttrs is what every CA private key must satisfy.
func keyPolicyAttrs() []wantAttr {
	return []wantAttr{
		{pkcs11.CKA_TOKEN, "CKA_TOKEN", true},
		{pkcs11.CKA_PRIVATE, "CKA_PRIVATE", true},
		{pkcs11.CKA_SENSITIVE, "CKA_SENSITIVE", true},
		{pkcs11.CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", true},
		{pkcs11.CKA_EXTRACTABLE, "CKA_EXTRACTABLE", false},
		{pkcs11.CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE", true},
		{pkcs11.CKA_SIGN, "CKA_SIGN", true},
		{pkcs11.CKA_DECRYPT, "CKA_DECRYPT", false},
		{pkcs11.CKA_UNWRAP, "CKA_UNWRAP", false},
		{pkcs11.CKA_DERIVE, "CKA_DERIVE", false},
	}
}

// checkKeyAttributes reads the private key's attributes back from the token
// and returns an error wrapping ErrKeyPolicy listing every violation.
func checkKeyAttributes(st *tokenState, key crypto11.Signer) error {
	policy := keyPolicyAttrs()
	types := make([]crypto11.AttributeType, len(policy))
	for i, a := range policy {
		types[i] = a.typ
	}
	attrs, err := st.c11.GetAttributes(key, types)
	if err != nil {
		return err
	}
	var bad []string
	for _, a := range policy {
		v := attrs[a.typ]
		if v == nil || len(v.Value) != 1 {
			bad = append(bad, a.name+" unreadable")
			continue
		}
		if got := v.Value[0] != 0; got != a.want {
			bad = append(bad, fmt.Sprintf("%s=%t (want %t)", a.name, got, a.want))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrKeyPolicy, strings.Join(bad, ", "))
	}
	return nil
}
