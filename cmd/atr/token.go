package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/sirupsen/logrus"

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

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// splitCAs sorts the CA certificates on a token into self-signed roots and
// intermediates, newest first: latest NotBefore, then latest NotAfter.
func splitCAs(certs []hsm.TokenCertificate) (roots, intermediates []hsm.TokenCertificate) {
	for _, c := range certs {
		if c.Cert == nil || !c.Cert.IsCA {
			continue
		}
		if isSelfSigned(c.Cert) {
			roots = append(roots, c)
		} else {
			intermediates = append(intermediates, c)
		}
	}
	newest := func(s []hsm.TokenCertificate) {
		sort.SliceStable(s, func(i, j int) bool {
			a, b := s[i].Cert, s[j].Cert
			if !a.NotBefore.Equal(b.NotBefore) {
				return a.NotBefore.After(b.NotBefore)
			}
			return a.NotAfter.After(b.NotAfter)
		})
	}
	newest(roots)
	newest(intermediates)
	return roots, intermediates
}

func certsOf(tcs []hsm.TokenCertificate) []*x509.Certificate {
	out := make([]*x509.Certificate, 0, len(tcs))
	for _, c := range tcs {
		out = append(out, c.Cert)
	}
	return out
}

type publicKeyEqualer interface{ Equal(crypto.PublicKey) bool }

func samePublicKey(a, b crypto.PublicKey) bool {
	e, ok := a.(publicKeyEqualer)
	return ok && e.Equal(b)
}

// findCAKey returns the newest certificate among candidates (optionally
// restricted to label) that is valid at now and whose private key is on the
// token, with its signer. A key that is on the token but fails CheckKey
// (extractable, not sensitive) is an error, never skipped.
func findCAKey(ctx context.Context, tok *hsm.Token, tokenLabel, label string, candidates []hsm.TokenCertificate, now time.Time) (*hsm.Signer, hsm.TokenCertificate, error) {
	for _, c := range candidates {
		if label != "" && c.Label != label {
			continue
		}
		if now.After(c.Cert.NotAfter) || now.Before(c.Cert.NotBefore) {
			continue
		}
		s, err := tok.Signer(ctx, hsm.URI{Token: tokenLabel, Object: c.Label, ID: c.ID})
		if errors.Is(err, hsm.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, hsm.TokenCertificate{}, fmt.Errorf("finding the key of certificate %q: %w", c.Label, err)
		}
		if !samePublicKey(s.Public(), c.Cert.PublicKey) {
			continue
		}
		if err := tok.CheckKey(ctx, s, c.Cert); err != nil {
			return nil, hsm.TokenCertificate{}, fmt.Errorf("checking the key of certificate %q: %w", c.Label, err)
		}
		return s, c, nil
	}
	what := "a valid CA certificate"
	if label != "" {
		what = fmt.Sprintf("a valid CA certificate labelled %q", label)
	}
	return nil, hsm.TokenCertificate{}, fmt.Errorf("token %q holds no %s with a matching private key: %w", tokenLabel, what, hsm.ErrKeyNotFound)
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func pemCerts(cs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range cs {
		b.Write(pemCert(c))
	}
	return b.Bytes()
}

// bundlePEM is the CA bundle: the unexpired intermediates, newest first,
// then the roots.
func bundlePEM(roots, intermediates []*x509.Certificate, now time.Time) []byte {
	var out []*x509.Certificate
	for _, c := range intermediates {
		if now.Before(c.NotAfter) {
			out = append(out, c)
		}
	}
	return pemCerts(append(out, roots...))
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory and a rename, so that readers never see a half-written file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// writeNewFile creates path with mode, refusing to replace an existing file.
func writeNewFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
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
