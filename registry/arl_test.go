package registry

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

// rotatedEnv is a revEnv after an intermediate rotation: a second issuing
// CA (inter2) certified by the same root, and a registry issuing under it
// that still answers for the first (Responders).
type rotatedEnv struct {
	*revEnv
	inter2  *x509.Certificate
	issuer2 *ca.Issuer
	old     *Registry // issues under intermediate 1
	cur     *Registry // issues under intermediate 2, answers for both
	store   *Store
}

func newRotatedEnv(t *testing.T, db string) *rotatedEnv {
	t.Helper()
	ctx := context.Background()
	e := &rotatedEnv{revEnv: newRevEnv(t, db, 0)}
	key2, err := e.tok.GenerateKey(ctx, "issuing-2", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := ca.IntermediateTemplate("ATR Revocation Test Issuing CA 2", revTrustDomain, 0, e.clock.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if e.inter2, err = ca.CreateCertificate(tmpl, e.root, key2.Public(), e.rootKey); err != nil {
		t.Fatal(err)
	}
	if e.issuer2, err = ca.NewIssuer(key2, e.inter2, []*x509.Certificate{e.root}, ca.Profile{TrustDomain: revTrustDomain,
		CRLURL: "http://registry.revocation.test/v1/crl/" + ca.KeyID(e.inter2), OCSPURL: "http://registry.revocation.test/v1/ocsp"}); err != nil {
		t.Fatal(err)
	}
	verifier, err := ca.NewVerifier([]*x509.Certificate{e.root}, []*x509.Certificate{e.inter, e.inter2}, revTrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	if e.store, err = Open(ctx, e.url, e.log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	if _, err := e.store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	mk := func(iss *ca.Issuer, others ...*ca.Responder) *Registry {
		r, err := New(Config{Store: e.store, Issuer: iss, Responders: others, Verifier: verifier, TrustDomain: revTrustDomain,
			RotationGrace: -1, Now: e.clock.Now, Log: e.log, VRFSigner: testVRFSigner(t), StatusCacheTTL: -1})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	e.old = mk(e.regIssuer)
	e.cur = mk(e.issuer2, e.regIssuer.Responder())
	return e
}

func (e *rotatedEnv) registerWith(t *testing.T, r *Registry, name string) *x509.Certificate {
	t.Helper()
	iss, err := r.Register(context.Background(), SystemActor(), RegisterRequest{Name: name, CSR: newTestCSR(t)})
	if err != nil {
		t.Fatalf("Register(%s): %v", name, err)
	}
	return parseTestPEM(t, iss.CertificatePEM)
}

// ocspFor asks cur about leaf naming issuer in the CertID and checks the
// response's signature against issuer.
func (e *rotatedEnv) ocspFor(t *testing.T, leaf, issuer *x509.Certificate) *ocsp.Response {
	t.Helper()
	req := ocspRequest(t, leaf, issuer, crypto.SHA256)
	der, err := e.cur.OCSP(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ocsp.ParseResponse(der, issuer)
	if err != nil {
		t.Fatalf("OCSP response does not verify under %s: %v", issuer.Subject.CommonName, err)
	}
	return resp
}

// crlOf returns the CRL of the CA with cert's key id, checked against cert,
// as serial → reason.
func (e *rotatedEnv) crlOf(t *testing.T, cert *x509.Certificate) (*x509.RevocationList, map[string]int) {
	t.Helper()
	der, _, err := e.cur.CRLOf(context.Background(), ca.KeyID(cert))
	if err != nil {
		t.Fatalf("CRLOf(%s): %v", cert.Subject.CommonName, err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(cert); err != nil {
		t.Fatalf("the CRL of %s is not signed by it: %v", cert.Subject.CommonName, err)
	}
	return crl, crlEntries(crl)
}

func (e *rotatedEnv) signRootCRL(t *testing.T, number int64, revoked ...*x509.Certificate) []byte {
	t.Helper()
	resp, err := ca.NewResponder(e.rootKey, e.root)
	if err != nil {
		t.Fatal(err)
	}
	var entries []x509.RevocationListEntry
	for _, c := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: e.clock.Now().Truncate(time.Second), ReasonCode: ocsp.KeyCompromise})
	}
	now := e.clock.Now().Truncate(time.Second)
	der, err := resp.SignCRL(big.NewInt(number), now, now.Add(24*time.Hour), entries)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestRevocationPerIssuer replays the rotation defect: after the
// intermediate is rotated, a revocation of a certificate of the previous
// intermediate must still show on that intermediate's own CRL and OCSP
// (before, both channels were signed only by the new issuing key, and the
// old leaf's revocation was invisible to relying parties).
func TestRevocationPerIssuer(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			e := newRotatedEnv(t, db)
			a1 := e.registerWith(t, e.old, "old.acme")
			a1kept := e.registerWith(t, e.old, "old-kept.acme")
			a2 := e.registerWith(t, e.cur, "new.acme")
			for _, n := range []string{"old.acme", "new.acme"} {
				if _, err := e.cur.Revoke(ctx, SystemActor(), n, "keyCompromise"); err != nil {
					t.Fatal(err)
				}
			}
			c1, m1 := e.crlOf(t, e.inter)
			c2, m2 := e.crlOf(t, e.inter2)
			if len(m1) != 1 || m1[a1.SerialNumber.Text(16)] != ocsp.KeyCompromise {
				t.Errorf("CRL of intermediate 1: %v, want only %s", m1, ca.FormatSerial(a1.SerialNumber))
			}
			if len(m2) != 1 || m2[a2.SerialNumber.Text(16)] != ocsp.KeyCompromise {
				t.Errorf("CRL of intermediate 2: %v, want only %s", m2, ca.FormatSerial(a2.SerialNumber))
			}
			if d, _, err := e.cur.CRL(ctx); err != nil || !slices.Equal(d, c2.Raw) {
				t.Errorf("CRL() is not the issuing CA's CRL (%v)", err)
			}
			if r := e.ocspFor(t, a1, e.inter); r.Status != ocsp.Revoked {
				t.Errorf("OCSP for the old leaf from its issuer: status %d, want revoked", r.Status)
			}
			if r := e.ocspFor(t, a2, e.inter2); r.Status != ocsp.Revoked {
				t.Errorf("OCSP for the new leaf: status %d, want revoked", r.Status)
			}
			if r := e.ocspFor(t, a1kept, e.inter); r.Status != ocsp.Good {
				t.Errorf("OCSP for a good old leaf: status %d, want good", r.Status)
			}
			// A CertID naming the wrong CA for a serial is "unknown", signed by the CA it names.
			if r := e.ocspFor(t, a1, e.inter2); r.Status != ocsp.Unknown {
				t.Errorf("OCSP naming intermediate 2 for a serial of intermediate 1: status %d, want unknown", r.Status)
			}
			// CRL numbers: per issuer, growing at each regeneration.
			if _, err := e.cur.Revoke(ctx, SystemActor(), "old-kept.acme", "superseded"); err != nil {
				t.Fatal(err)
			}
			if c1b, _ := e.crlOf(t, e.inter); c1b.Number.Cmp(c1.Number) <= 0 {
				t.Errorf("intermediate 1's CRL number %v after %v", c1b.Number, c1.Number)
			}
			if _, _, err := e.cur.CRLOf(ctx, strings.Repeat("ab", 20)); !errors.Is(err, ErrNotFound) {
				t.Errorf("CRLOf(an unknown key id): %v, want ErrNotFound", err)
			}
		})
	}
}

// TestRootCRLRevokesIntermediate: a root CRL listing intermediate 1 makes
// its leaves revoked everywhere (verify, OCSP, its CRL), drops it from the
// bundle and stops issuance under it, while intermediate 2 is unaffected.
func TestRootCRLRevokesIntermediate(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			e := newRotatedEnv(t, db)
			a1 := e.registerWith(t, e.old, "old.acme")
			a2 := e.registerWith(t, e.cur, "new.acme")
			verify := func(c *x509.Certificate) *VerifyResult {
				t.Helper()
				res, err := e.cur.Verify(ctx, ca.EncodeCertificatesPEM(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			if !verify(a1).Verified || !strings.Contains(string(e.cur.Bundle()), string(ca.EncodeCertificatesPEM(e.inter))) {
				t.Fatal("before the root CRL: the old leaf must verify and intermediate 1 be in the bundle")
			}
			roots := []*x509.Certificate{e.root}
			if _, err := e.store.PublishRootCRL(ctx, e.signRootCRL(t, 1), roots); err != nil {
				t.Fatalf("publishing an empty root CRL: %v", err)
			}
			if der, _, err := e.cur.CRLOf(ctx, ca.KeyID(e.root)); err != nil {
				t.Fatalf("the root CRL is not served: %v", err)
			} else if crl, err := x509.ParseRevocationList(der); err != nil || crl.CheckSignatureFrom(e.root) != nil {
				t.Fatalf("served root CRL: %v", err)
			}
			if _, err := e.store.PublishRootCRL(ctx, e.signRootCRL(t, 2, e.inter), roots); err != nil {
				t.Fatalf("publishing the root CRL: %v", err)
			}

			if res := verify(a1); res.Verified || res.Reason != ReasonIssuerRevoked {
				t.Errorf("verify of a leaf under the revoked intermediate: %+v, want %s", res, ReasonIssuerRevoked)
			}
			if res := verify(a2); !res.Verified {
				t.Errorf("verify of a leaf under intermediate 2: %+v", res)
			}
			if r := e.ocspFor(t, a1, e.inter); r.Status != ocsp.Revoked || r.RevocationReason != ocsp.CACompromise {
				t.Errorf("OCSP for a leaf of the revoked intermediate: status %d reason %d, want revoked cACompromise", r.Status, r.RevocationReason)
			}
			if _, m := e.crlOf(t, e.inter); m[a1.SerialNumber.Text(16)] != ocsp.CACompromise {
				t.Errorf("CRL of the revoked intermediate: %v, want its leaf as cACompromise", m)
			}
			if b := string(e.cur.Bundle()); strings.Contains(b, string(ca.EncodeCertificatesPEM(e.inter))) || !strings.Contains(b, string(ca.EncodeCertificatesPEM(e.inter2))) {
				t.Error("the bundle still holds the revoked intermediate, or lost intermediate 2")
			}
			if _, err := e.old.Register(ctx, SystemActor(), RegisterRequest{Name: "late.acme", CSR: newTestCSR(t)}); !errors.Is(err, ErrUnavailable) {
				t.Errorf("issuance under the revoked intermediate: %v, want ErrUnavailable", err)
			}
			if _, err := e.old.AuthenticateAgent(ctx, []*x509.Certificate{a1}); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("mTLS with a leaf of the revoked intermediate: %v, want ErrUnauthenticated", err)
			}
			e.registerWith(t, e.cur, "still-fine.acme")

			// Publication rules.
			if _, err := e.store.PublishRootCRL(ctx, e.signRootCRL(t, 2), roots); !errors.Is(err, ErrConflict) {
				t.Errorf("a root CRL reusing number 2: %v, want ErrConflict", err)
			}
			notRoot, err := e.regIssuer.SignCRL(big.NewInt(9), e.clock.Now(), e.clock.Now().Add(time.Hour), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.store.PublishRootCRL(ctx, notRoot, roots); !errors.Is(err, ErrInvalid) {
				t.Errorf("a CRL signed by an intermediate: %v, want ErrInvalid", err)
			}
			if _, err := e.store.PublishRootCRL(ctx, []byte("not a CRL"), roots); !errors.Is(err, ErrInvalid) {
				t.Errorf("garbage: %v, want ErrInvalid", err)
			}
		})
	}
}

// TestRootCRLCheckedOnce: every revocation and rotation moves the
// revocation revision, but not the root CRLs' own (migration 010): the root
// CRLs are then neither read again (root_crls is renamed away meanwhile: a
// read would fail) nor parsed and checked again (a P-384 signature
// verification per issuance under a rotation load). A new root CRL is read,
// checked and applied.
func TestRootCRLCheckedOnce(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			e := newRotatedEnv(t, db)
			a1 := e.registerWith(t, e.old, "old.acme")
			roots := []*x509.Certificate{e.root}
			if _, err := e.store.PublishRootCRL(ctx, e.signRootCRL(t, 1, e.inter), roots); err != nil {
				t.Fatal(err)
			}
			verdict := func() string {
				t.Helper()
				res, err := e.cur.Verify(ctx, ca.EncodeCertificatesPEM(a1), nil)
				if err != nil {
					t.Fatal(err)
				}
				return res.Reason
			}
			if got := verdict(); got != ReasonIssuerRevoked {
				t.Fatalf("verify under the revoked intermediate: %q, want %s", got, ReasonIssuerRevoked)
			}
			checks := rootCRLChecks.Load()
			hide := func(from, to string) {
				t.Helper()
				if _, err := e.store.db.ExecContext(ctx, `ALTER TABLE `+from+` RENAME TO `+to); err != nil {
					t.Fatal(err)
				}
			}
			hide("root_crls", "root_crls_hidden")
			for i, n := range []string{"a.acme", "b.acme"} {
				e.registerWith(t, e.cur, n)
				if _, err := e.cur.Revoke(ctx, SystemActor(), n, "keyCompromise"); err != nil {
					t.Fatal(err)
				}
				if got := verdict(); got != ReasonIssuerRevoked {
					t.Fatalf("after revocation %d: %q, want %s", i+1, got, ReasonIssuerRevoked)
				}
			}
			if got := rootCRLChecks.Load() - checks; got != 0 {
				t.Errorf("the unchanged root CRL was checked %d more times after the revision moved, want 0", got)
			}
			hide("root_crls_hidden", "root_crls")
			// A new root CRL (no intermediate revoked) is checked and applied.
			if _, err := e.store.PublishRootCRL(ctx, e.signRootCRL(t, 2), roots); err != nil {
				t.Fatal(err)
			}
			if got := verdict(); got == ReasonIssuerRevoked {
				t.Errorf("after a root CRL that no longer lists the intermediate: still %q", got)
			}
			// Once when published, once when loaded.
			if got := rootCRLChecks.Load() - checks; got != 2 {
				t.Errorf("a new root CRL was checked %d times, want 2 (publication, load)", got)
			}
		})
	}
}

// TestBackfillIssuers: rows written before migration 007 (or by an older
// replica) get their issuer from their DER, and OCSP answers for them.
func TestBackfillIssuers(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			e := newRotatedEnv(t, db)
			a1 := e.registerWith(t, e.old, "old.acme")
			a2 := e.registerWith(t, e.old, "old-2.acme")
			if _, err := e.store.db.ExecContext(ctx, `UPDATE certificates SET issuer_key_id = NULL`); err != nil {
				t.Fatal(err)
			}
			if r := e.ocspFor(t, a2, e.inter); r.Status != ocsp.Good {
				t.Errorf("OCSP for a row without issuer: status %d, want good", r.Status)
			}
			n, err := e.cur.BackfillIssuers(ctx)
			if err != nil || n != 1 { // a2's row was filled by the OCSP lookup
				t.Fatalf("BackfillIssuers: %d, %v; want 1", n, err)
			}
			var got string
			if err := e.store.db.GetContext(ctx, &got, e.store.db.Rebind(`SELECT issuer_key_id FROM certificates WHERE serial = ?`), ca.FormatSerial(a1.SerialNumber)); err != nil || got != ca.KeyID(e.inter) {
				t.Errorf("issuer_key_id %q (%v), want %s", got, err, ca.KeyID(e.inter))
			}
		})
	}
}

// TestBackfillIssuersGoesPastUnparsableRows: a row whose stored DER does not
// parse gets the empty issuer (no CA's CRL lists it, OCSP answers unknown)
// and the backfill goes on: before, the first such row failed every
// backfill, so every row without an issuer behind it stayed out of its
// CA's CRL, and serve refused to start. A revoked row the backfill fills
// reaches its CA's CRL at once, although a CRL made without it was stored.
func TestBackfillIssuersGoesPastUnparsableRows(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			e := newRotatedEnv(t, db)
			good := e.registerWith(t, e.old, "good.acme")
			bad := e.registerWith(t, e.old, "bad.acme")
			goodSerial, badSerial := ca.FormatSerial(good.SerialNumber), ca.FormatSerial(bad.SerialNumber)
			if _, err := e.store.db.ExecContext(ctx, `UPDATE certificates SET issuer_key_id = NULL`); err != nil {
				t.Fatal(err)
			}
			if _, err := e.store.db.ExecContext(ctx, e.store.db.Rebind(`UPDATE certificates SET der = ? WHERE serial = ?`), []byte{0x30, 0x03, 0x02, 0x01}, badSerial); err != nil {
				t.Fatal(err)
			}
			if _, err := e.cur.Revoke(ctx, SystemActor(), "good.acme", "keyCompromise"); err != nil {
				t.Fatal(err)
			}
			if _, listed := e.crlOf(t, e.inter); len(listed) != 0 {
				t.Fatalf("before the backfill the CRL lists %v; want nothing (the revoked row names no issuer yet)", listed)
			}
			if r := e.ocspFor(t, bad, e.inter); r.Status != ocsp.Unknown {
				t.Errorf("OCSP for the row whose DER does not parse, before the backfill: status %d, want unknown", r.Status)
			}
			n, err := e.cur.BackfillIssuers(ctx)
			if err != nil || n != 1 {
				t.Fatalf("BackfillIssuers = %d, %v; want 1 (the good row), nil", n, err)
			}
			for serial, want := range map[string]string{goodSerial: ca.KeyID(e.inter), badSerial: ""} {
				var got *string
				if err := e.store.db.GetContext(ctx, &got, e.store.db.Rebind(`SELECT issuer_key_id FROM certificates WHERE serial = ?`), serial); err != nil || got == nil || *got != want {
					t.Errorf("issuer_key_id of %s = %v, %v; want %q", serial, got, err, want)
				}
			}
			if _, listed := e.crlOf(t, e.inter); listed[good.SerialNumber.Text(16)] != ocsp.KeyCompromise || len(listed) != 1 {
				t.Errorf("after the backfill the CRL lists %v; want only %s (keyCompromise)", listed, good.SerialNumber.Text(16))
			}
			if n, err := e.cur.BackfillIssuers(ctx); err != nil || n != 0 {
				t.Errorf("a second BackfillIssuers = %d, %v; want 0, nil (nothing left)", n, err)
			}
			if r := e.ocspFor(t, good, e.inter); r.Status != ocsp.Revoked {
				t.Errorf("OCSP for the backfilled revoked row: status %d, want revoked", r.Status)
			}
			if r := e.ocspFor(t, bad, e.inter); r.Status != ocsp.Unknown {
				t.Errorf("OCSP for the row whose DER does not parse: status %d, want unknown", r.Status)
			}
		})
	}
}

// TestOCSPServerCertificate: the registry's own TLS certificate (issued
// through the pipeline, servercert.go) is "good" in OCSP from its issuer,
// like any certificate it names an OCSP URL in.
func TestOCSPServerCertificate(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			e := newRotatedEnv(t, db)
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := e.cur.IssueServerCertificate(context.Background(), key.Public(), []string{"localhost"}, nil, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if r := e.ocspFor(t, sc.Certificate, e.inter2); r.Status != ocsp.Good {
				t.Errorf("OCSP for the server certificate: status %d, want good", r.Status)
			}
			if r := e.ocspFor(t, sc.Certificate, e.inter); r.Status != ocsp.Unknown {
				t.Errorf("OCSP naming the other intermediate: status %d, want unknown", r.Status)
			}
		})
	}
}
