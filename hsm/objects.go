package hsm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"

	"github.com/miekg/pkcs11"
)

// TokenCertificate is an X.509 certificate object on the token.
type TokenCertificate struct {
	Label string
	ID    []byte
	Cert  *x509.Certificate
}

// ObjectInfo describes one object on the token, for `atr ceremony show` and
// ceremony transcripts. Nothing secret is ever read.
type ObjectInfo struct {
	Class   string // "private-key", "public-key", "certificate", "secret-key", "data" or "0x…"
	Label   string
	ID      []byte
	KeyType string // keys: "EC P-256", "EC P-384", "RSA 3072", …; "" otherwise
	Subject string // certificates: subject DN

	// Private keys only (all false for other classes).
	Sensitive, Extractable, AlwaysSensitive, NeverExtractable bool
	Sign, Decrypt, Unwrap, Derive                             bool
}

// IDHex is the CKA_ID in lower-case hex.
func (o ObjectInfo) IDHex() string { return hex.EncodeToString(o.ID) }

// ImportCertificate stores c on the token as a public X.509 certificate
// object with CKA_LABEL label and CKA_ID id (a random 16-byte ID when id is
// empty; pass the key's ID to pair a certificate with its key). It fails with
// ErrExists when a certificate with that label, or the same certificate,
// is already on the token.
func (t *Token) ImportCertificate(ctx context.Context, label string, id []byte, c *x509.Certificate) error {
	if c == nil || len(c.Raw) == 0 {
		return errors.New("hsm: importing certificate: nil certificate")
	}
	if err := checkLabel(label); err != nil {
		return err
	}
	t.createMu.Lock()
	defer t.createMu.Unlock()
	what := fmt.Sprintf("importing certificate %q", label)
	err := t.use(ctx, what, func(st *tokenState, _ uint64) error {
		cls := pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE)
		n, err := st.count([]*pkcs11.Attribute{cls, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)})
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("hsm: %s: a certificate with this label exists: %w", what, ErrExists)
		}
		n, err = st.count([]*pkcs11.Attribute{cls, pkcs11.NewAttribute(pkcs11.CKA_VALUE, c.Raw)})
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("hsm: %s: this certificate is already on the token: %w", what, ErrExists)
		}
		if len(id) == 0 {
			id = make([]byte, idLength)
			_, _ = rand.Read(id)
		}
		if err := st.c11.ImportCertificateWithLabel(bytes.Clone(id), []byte(label), c); err != nil {
			return fmt.Errorf("hsm: %s: %w", what, err)
		}
		return nil
	})
	if err == nil {
		t.log.WithField("label", label).WithField("subject", c.Subject.String()).Info("hsm: certificate imported")
	}
	return err
}

// Certificates returns every X.509 certificate object on the token, sorted
// by label then ID. A certificate object that does not parse is an error.
func (t *Token) Certificates(ctx context.Context) ([]TokenCertificate, error) {
	var out []TokenCertificate
	err := t.use(ctx, "listing certificates", func(st *tokenState, _ uint64) error {
		out = nil
		return st.withSession(func(sh pkcs11.SessionHandle) error {
			hs, err := st.find(sh, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
				pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
			})
			if err != nil {
				return err
			}
			for _, h := range hs {
				attrs, err := st.raw.GetAttributeValue(sh, h, []*pkcs11.Attribute{
					pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
					pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
					pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil),
				})
				if err != nil {
					return err
				}
				c, err := x509.ParseCertificate(attrs[2].Value)
				if err != nil {
					return fmt.Errorf("hsm: certificate object %q does not parse: %w", attrs[0].Value, err)
				}
				out = append(out, TokenCertificate{Label: string(attrs[0].Value), ID: bytes.Clone(attrs[1].Value), Cert: c})
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Label != out[j].Label {
			return out[i].Label < out[j].Label
		}
		return bytes.Compare(out[i].ID, out[j].ID) < 0
	})
	return out, nil
}

// Objects lists every object the logged-in user can see, sorted by label,
// class and ID. It reads only non-secret attributes.
func (t *Token) Objects(ctx context.Context) ([]ObjectInfo, error) {
	var out []ObjectInfo
	err := t.use(ctx, "listing objects", func(st *tokenState, _ uint64) error {
		out = nil
		if err := st.probe(); err != nil { // private objects are hidden when logged out
			return err
		}
		return st.withSession(func(sh pkcs11.SessionHandle) error {
			hs, err := st.find(sh, nil)
			if err != nil {
				return err
			}
			for _, h := range hs {
				o, err := st.describe(sh, h)
				if err != nil {
					return err
				}
				out = append(out, o)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Label != b.Label {
			return a.Label < b.Label
		}
		if a.Class != b.Class {
			return a.Class < b.Class
		}
		return bytes.Compare(a.ID, b.ID) < 0
	})
	return out, nil
}

// attr reads one attribute; ok is false when the object does not have it.
func (st *tokenState) attr(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle, typ uint) (v []byte, ok bool, err error) {
	attrs, err := st.raw.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(typ, nil)})
	if err != nil {
		if isP11(err, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID) || isP11(err, pkcs11.CKR_ATTRIBUTE_SENSITIVE) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return attrs[0].Value, true, nil
}

func (st *tokenState) flag(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle, typ uint) (bool, error) {
	v, ok, err := st.attr(sh, h, typ)
	return ok && len(v) == 1 && v[0] != 0, err
}

// ulong decodes a CK_ULONG attribute (host byte order).
func ulong(v []byte) uint {
	switch len(v) {
	case 8:
		return uint(binary.NativeEndian.Uint64(v))
	case 4:
		return uint(binary.NativeEndian.Uint32(v))
	}
	return ^uint(0)
}

func (st *tokenState) describe(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) (ObjectInfo, error) {
	var o ObjectInfo
	cls, ok, err := st.attr(sh, h, pkcs11.CKA_CLASS)
	if err != nil || !ok {
		return o, err
	}
	class := ulong(cls)
	switch class {
	case pkcs11.CKO_PRIVATE_KEY:
		o.Class = "private-key"
	case pkcs11.CKO_PUBLIC_KEY:
		o.Class = "public-key"
	case pkcs11.CKO_CERTIFICATE:
		o.Class = "certificate"
	case pkcs11.CKO_SECRET_KEY:
		o.Class = "secret-key"
	case pkcs11.CKO_DATA:
		o.Class = "data"
	default:
		o.Class = fmt.Sprintf("0x%x", class)
	}
	if v, ok, err := st.attr(sh, h, pkcs11.CKA_LABEL); err != nil {
		return o, err
	} else if ok {
		o.Label = string(v)
	}
	if v, ok, err := st.attr(sh, h, pkcs11.CKA_ID); err != nil {
		return o, err
	} else if ok {
		o.ID = bytes.Clone(v)
	}
	switch class {
	case pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY, pkcs11.CKO_SECRET_KEY:
		if o.KeyType, err = st.keyType(sh, h); err != nil {
			return o, err
		}
	case pkcs11.CKO_CERTIFICATE:
		if v, ok, err := st.attr(sh, h, pkcs11.CKA_VALUE); err != nil {
			return o, err
		} else if ok {
			if c, err := x509.ParseCertificate(v); err == nil {
				o.Subject = c.Subject.String()
			} else {
				o.Subject = "(unparsable certificate)"
			}
		}
	}
	if class == pkcs11.CKO_PRIVATE_KEY {
		for _, f := range []struct {
			typ uint
			dst *bool
		}{
			{pkcs11.CKA_SENSITIVE, &o.Sensitive},
			{pkcs11.CKA_EXTRACTABLE, &o.Extractable},
			{pkcs11.CKA_ALWAYS_SENSITIVE, &o.AlwaysSensitive},
			{pkcs11.CKA_NEVER_EXTRACTABLE, &o.NeverExtractable},
			{pkcs11.CKA_SIGN, &o.Sign},
			{pkcs11.CKA_DECRYPT, &o.Decrypt},
			{pkcs11.CKA_UNWRAP, &o.Unwrap},
			{pkcs11.CKA_DERIVE, &o.Derive},
		} {
			if *f.dst, err = st.flag(sh, h, f.typ); err != nil {
				return o, err
			}
		}
	}
	return o, nil
}

func (st *tokenState) keyType(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) (string, error) {
	v, ok, err := st.attr(sh, h, pkcs11.CKA_KEY_TYPE)
	if err != nil || !ok {
		return "", err
	}
	switch kt := ulong(v); kt {
	case pkcs11.CKK_EC:
		p, ok, err := st.attr(sh, h, pkcs11.CKA_EC_PARAMS)
		if err != nil {
			return "", err
		}
		oidP256 := asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
		oidP384 := asn1.ObjectIdentifier{1, 3, 132, 0, 34}
		var oid asn1.ObjectIdentifier
		if ok {
			if _, err := asn1.Unmarshal(p, &oid); err == nil {
				switch {
				case oid.Equal(oidP256):
					return "EC P-256", nil
				case oid.Equal(oidP384):
					return "EC P-384", nil
				}
				return "EC " + oid.String(), nil
			}
		}
		return "EC", nil
	case pkcs11.CKK_RSA:
		if m, ok, err := st.attr(sh, h, pkcs11.CKA_MODULUS); err != nil {
			return "", err
		} else if ok {
			return fmt.Sprintf("RSA %d", len(bytes.TrimLeft(m, "\x00"))*8), nil
		}
		return "RSA", nil
	case ckkECEdwards:
		return "Ed25519", nil
	case pkcs11.CKK_AES:
		return "AES", nil
	default:
		return fmt.Sprintf("0x%x", kt), nil
	}
}

// CheckKey is the start-up check for a CA key: s's public key must equal
// c's, and the private key on the token must be sensitive, always have been
// sensitive, not extractable, never have been extractable, allowed to sign
// and not allowed to decrypt, unwrap or derive. Violations wrap ErrKeyPolicy.
func (t *Token) CheckKey(ctx context.Context, s *Signer, c *x509.Certificate) error {
	if s == nil || c == nil {
		return errors.New("hsm: checking key: nil signer or certificate")
	}
	if s.t != t {
		return fmt.Errorf("hsm: checking key %s: signer belongs to another token", s.uri.String())
	}
	if !publicEqual(s.pub, c.PublicKey) {
		return fmt.Errorf("hsm: checking key %s: public key does not match certificate %q: %w",
			s.uri.String(), c.Subject.String(), ErrKeyPolicy)
	}
	return t.CheckKeyPolicy(ctx, s)
}

// CheckKeyPolicy is CheckKey for a key without a certificate (the log and
// VRF keys): the private key on the token must be sensitive, always have
// been sensitive, not extractable, never have been extractable, allowed to
// sign and not allowed to decrypt, unwrap or derive. Violations wrap
// ErrKeyPolicy.
func (t *Token) CheckKeyPolicy(ctx context.Context, s *Signer) error {
	if s == nil {
		return errors.New("hsm: checking key: nil signer")
	}
	if s.t != t {
		return fmt.Errorf("hsm: checking key %s: signer belongs to another token", s.uri.String())
	}
	what := "checking key " + s.uri.String()
	return t.use(ctx, what, func(st *tokenState, gen uint64) error {
		key, err := s.keyFor(st, gen)
		if err != nil {
			return err
		}
		if err := checkKeyAttributes(st, key); err != nil {
			return fmt.Errorf("hsm: %s: %w", what, err)
		}
		return nil
	})
}
