package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/hsm"
)

// useDevSoftHSMConf points SoftHSM2 at <DataDir>/softhsm2.conf when
// SOFTHSM2_CONF is unset and that file exists (the development layout), so
// that commands run after scripts/dev-up.sh find the dev tokens.
func (a *app) useDevSoftHSMConf(cfg Config, log *logrus.Entry) error {
	if v, ok := a.lookupEnv("SOFTHSM2_CONF"); ok && v != "" {
		return nil
	}
	p := filepath.Join(cfg.DataDir, "softhsm2.conf")
	if _, err := os.Stat(p); err != nil {
		return nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", p, err)
	}
	log.WithField("softhsm2_conf", abs).Debug("using the data dir's SoftHSM2 configuration")
	return os.Setenv("SOFTHSM2_CONF", abs)
}

// openToken logs into the token with the given label.
func openToken(ctx context.Context, cfg Config, label, pinFile, pin string, log *logrus.Entry) (*hsm.Token, error) {
	p, err := hsm.ReadPIN(pinFile, pin)
	if err != nil {
		return nil, fmt.Errorf("reading the PIN of token %q: %w", label, err)
	}
	tok, err := hsm.Open(ctx, hsm.Config{
		Module:          cfg.PKCS11Module,
		TokenLabel:      label,
		PIN:             p,
		MaxSessions:     8,
		PoolWaitTimeout: 5 * time.Second,
	}, log.WithField("token", label))
	if err != nil {
		return nil, fmt.Errorf("opening token %q: %w", label, err)
	}
	return tok, nil
}

func openIssuingToken(ctx context.Context, cfg Config, log *logrus.Entry) (*hsm.Token, error) {
	return openToken(ctx, cfg, cfg.PKCS11Token, cfg.PKCS11PINFile, cfg.PKCS11PIN, log)
}

func openRootToken(ctx context.Context, cfg Config, log *logrus.Entry) (*hsm.Token, error) {
	return openToken(ctx, cfg, cfg.RootToken, cfg.RootPINFile, cfg.RootPIN, log)
}

// checkKeyURI parses a pkcs11: URI from the configuration: it must name an
// object, must not carry a PIN value, and its token (if any) must be the
// configured issuing token.
func checkKeyURI(s, token string) error {
	u, err := hsm.ParseURI(s)
	if err != nil {
		return err
	}
	if u.Object == "" && len(u.ID) == 0 {
		return errors.New("URI names no object (object= or id=)")
	}
	if u.Token != "" && token != "" && u.Token != token {
		return fmt.Errorf("URI names token %q, but the server uses token %q", u.Token, token)
	}
	return nil
}

// splitCAs sorts the CA certificates on a token into self-signed roots and
// intermediates, newest first (ca.SplitCAs).
func splitCAs(certs []hsm.TokenCertificate) (roots, intermediates []hsm.TokenCertificate) {
	objs := tokenObjects(certs)
	r, i := ca.SplitCAs(certsOf(certs))
	return objs.of(r), objs.of(i)
}

func certsOf(tcs []hsm.TokenCertificate) []*x509.Certificate {
	out := make([]*x509.Certificate, 0, len(tcs))
	for _, c := range tcs {
		out = append(out, c.Cert)
	}
	return out
}

// tokenObjectsMap maps the certificates ca's selection returns back to the
// token objects they came from.
type tokenObjectsMap map[*x509.Certificate]hsm.TokenCertificate

func tokenObjects(certs []hsm.TokenCertificate) tokenObjectsMap {
	m := make(tokenObjectsMap, len(certs))
	for _, c := range certs {
		if c.Cert != nil {
			m[c.Cert] = c
		}
	}
	return m
}

func (m tokenObjectsMap) of(certs []*x509.Certificate) []hsm.TokenCertificate {
	out := make([]hsm.TokenCertificate, 0, len(certs))
	for _, c := range certs {
		out = append(out, m[c])
	}
	return out
}

// tokenKeys is the token side of ca's CA selection: find is its
// ca.KeyFinder (the key stored with a certificate's label and ID), checked
// runs hsm CheckKey on a selected key (matching public key, sensitive,
// never extractable: a key that fails is an error, never skipped).
type tokenKeys struct {
	ctx   context.Context
	tok   *hsm.Token
	label string // the token's label
	objs  tokenObjectsMap
}

func newTokenKeys(ctx context.Context, tok *hsm.Token, tokenLabel string, certs []hsm.TokenCertificate) *tokenKeys {
	return &tokenKeys{ctx: ctx, tok: tok, label: tokenLabel, objs: tokenObjects(certs)}
}

func (k *tokenKeys) find(c *x509.Certificate) (crypto.Signer, error) {
	o, ok := k.objs[c]
	if !ok {
		return nil, nil
	}
	s, err := k.tok.Signer(k.ctx, hsm.URI{Token: k.label, Object: o.Label, ID: o.ID})
	if errors.Is(err, hsm.ErrKeyNotFound) || (err == nil && s == nil) {
		return nil, nil // its key was destroyed: nothing can sign for it
	}
	if err != nil {
		return nil, fmt.Errorf("finding the key of certificate %q: %w", o.Label, err)
	}
	return s, nil
}

func (k *tokenKeys) checked(sel ca.CAKey) (*hsm.Signer, hsm.TokenCertificate, error) {
	o := k.objs[sel.Cert]
	s, ok := sel.Signer.(*hsm.Signer)
	if !ok {
		return nil, hsm.TokenCertificate{}, fmt.Errorf("the key of certificate %q is not on token %q", o.Label, k.label)
	}
	if err := k.tok.CheckKey(k.ctx, s, sel.Cert); err != nil {
		return nil, hsm.TokenCertificate{}, fmt.Errorf("checking the key of certificate %q: %w", o.Label, err)
	}
	return s, o, nil
}

// findRootKey returns the root ca.SelectRoot chooses among roots (optionally
// restricted to label) — the newest valid one whose key is on the token —
// with its checked signer.
func findRootKey(ctx context.Context, tok *hsm.Token, tokenLabel, label string, roots []hsm.TokenCertificate, now time.Time) (*hsm.Signer, hsm.TokenCertificate, error) {
	var candidates []hsm.TokenCertificate
	for _, c := range roots {
		if label == "" || c.Label == label {
			candidates = append(candidates, c)
		}
	}
	keys := newTokenKeys(ctx, tok, tokenLabel, candidates)
	sel, err := ca.SelectRoot(certsOf(candidates), now, keys.find)
	if err != nil {
		what := "root"
		if label != "" {
			what = fmt.Sprintf("root labelled %q", label)
		}
		return nil, hsm.TokenCertificate{}, fmt.Errorf("token %q: no usable %s: %w", tokenLabel, what, err)
	}
	return keys.checked(sel)
}

// pemCert is ca.EncodeCertificatesPEM of one certificate.
func pemCert(c *x509.Certificate) []byte { return ca.EncodeCertificatesPEM(c) }

// sha256Hex is the SHA-256 of a file's contents, as transcripts record it.
func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// objectJSON is hsm.ObjectInfo as ceremony show and transcripts print it.
type objectJSON struct {
	Class   string      `json:"class"`
	Label   string      `json:"label"`
	ID      string      `json:"id,omitempty"`
	KeyType string      `json:"key_type,omitempty"`
	Subject string      `json:"subject,omitempty"`
	Private *privateKey `json:"private_key,omitempty"`
}

type privateKey struct {
	Sensitive        bool `json:"sensitive"`
	AlwaysSensitive  bool `json:"always_sensitive"`
	Extractable      bool `json:"extractable"`
	NeverExtractable bool `json:"never_extractable"`
	Sign             bool `json:"sign"`
	Decrypt          bool `json:"decrypt"`
	Unwrap           bool `json:"unwrap"`
	Derive           bool `json:"derive"`
}

func objectsJSON(objs []hsm.ObjectInfo) []objectJSON {
	out := make([]objectJSON, 0, len(objs))
	for _, o := range objs {
		j := objectJSON{Class: o.Class, Label: o.Label, ID: o.IDHex(), KeyType: o.KeyType, Subject: o.Subject}
		if o.Class == "private-key" {
			j.Private = &privateKey{Sensitive: o.Sensitive, AlwaysSensitive: o.AlwaysSensitive, Extractable: o.Extractable,
				NeverExtractable: o.NeverExtractable, Sign: o.Sign, Decrypt: o.Decrypt, Unwrap: o.Unwrap, Derive: o.Derive}
		}
		out = append(out, j)
	}
	return out
}
