package registry

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

// TestCheapReadsWhileNothingChanges: with the change notifier running, a
// repeated OCSP query and a repeated verify read nothing from the database
// while no revocation-relevant change commits anywhere, and see a revocation
// made by another replica (another Registry on the same database) without
// waiting for any cache to age. The certificates table is renamed away
// while the answers must come from memory: a query that read it would fail.
func TestCheapReadsWhileNothingChanges(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			e := newRotatedEnv(t, db)
			// StatusCacheTTL -1 in newRotatedEnv disables the verify cache;
			// this test wants it on, with a TTL far longer than the test so
			// that only the revision can make an entry stale.
			a, b := e.startedReplica(t), e.startedReplica(t)
			leaf := e.registerWith(t, a, "bot.acme")
			req := ocspRequest(t, leaf, e.inter2, crypto.SHA256)
			pemLeaf := ca.EncodeCertificatesPEM(leaf)
			status := func(r *Registry) int { t.Helper(); return e.ocspStatus(t, r, req) }
			verified := func(r *Registry) bool {
				t.Helper()
				res, err := r.Verify(ctx, pemLeaf, nil)
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return res.Verified
			}
			waitLive := func(r *Registry) {
				t.Helper()
				deadline := time.Now().Add(15 * time.Second) // hang guard, not a timing assertion
				for {
					if _, live := r.notify.revocationSeq(); live {
						return
					}
					if time.Now().After(deadline) {
						t.Fatal("the notifier did not become live")
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			waitLive(a)
			if status(a) != ocsp.Good || !verified(a) {
				t.Fatal("a fresh certificate must be good")
			}
			hide := func() {
				t.Helper()
				if _, err := e.store.db.ExecContext(ctx, `ALTER TABLE certificates RENAME TO certificates_hidden`); err != nil {
					t.Fatal(err)
				}
			}
			unhide := func() {
				t.Helper()
				if _, err := e.store.db.ExecContext(ctx, `ALTER TABLE certificates_hidden RENAME TO certificates`); err != nil {
					t.Fatal(err)
				}
			}
			hide()
			for range 100 {
				if status(a) != ocsp.Good || !verified(a) {
					t.Fatal("answers changed while nothing changed")
				}
			}
			unhide()

			// A revocation through replica b: replica a sees it as soon as
			// the notification arrives, with no cache to age.
			start := time.Now()
			if _, err := b.Revoke(ctx, SystemActor(), "bot.acme", "keyCompromise"); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(15 * time.Second) // hang guard
			for status(a) != ocsp.Revoked || verified(a) {
				if time.Now().After(deadline) {
					t.Fatal("replica a never saw replica b's revocation")
				}
				time.Sleep(5 * time.Millisecond)
			}
			t.Logf("%s: replica a answered revoked %v after replica b's revocation", db, time.Since(start))
			waitLive(a)
			status(a)
			verified(a)
			hide()
			defer unhide()
			if status(a) != ocsp.Revoked || verified(a) {
				t.Fatal("the revoked answers are not cached")
			}
		})
	}
}

// TestVerifyParsesEachInputOnce: a repeated verify does not parse the same
// PEM again (the parsed certificates are cached by the input's SHA-256),
// other bytes are parsed and judged on their own, and concurrent verifies
// that share cached certificates and append a chain do not touch each
// other's slices (run with -race).
func TestVerifyParsesEachInputOnce(t *testing.T) {
	ctx := context.Background()
	e := newRotatedEnv(t, "sqlite")
	leaf := e.registerWith(t, e.cur, "parse.acme")
	leafPEM, chainPEM := ca.EncodeCertificatesPEM(leaf), ca.EncodeCertificatesPEM(e.inter2)
	withChain := append(append([]byte{}, leafPEM...), chainPEM...)
	verify := func(l, c []byte) (*VerifyResult, error) {
		t.Helper()
		return e.cur.Verify(ctx, l, c)
	}
	before := pemParses.Load()
	for i := 0; i < 3; i++ {
		if res, err := verify(withChain, chainPEM); err != nil || !res.Verified {
			t.Fatalf("verify %d: %+v, %v", i, res, err)
		}
	}
	if got := pemParses.Load() - before; got != 2 {
		t.Errorf("three verifies of the same input parsed %d PEM inputs, want 2 (leaf input and chain once)", got)
	}
	// Other bytes are other keys: a truncated copy is parsed and refused.
	if _, err := verify(withChain[:len(leafPEM)-40], nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("truncated PEM after the whole one was cached: %v, want ErrInvalid", err)
	}
	// Another certificate of the same agent's name is judged by itself.
	other := e.registerWith(t, e.cur, "other.acme")
	if _, err := e.cur.Revoke(ctx, SystemActor(), "other.acme", "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	if res, err := verify(ca.EncodeCertificatesPEM(other), nil); err != nil || res.Verified || res.Reason != ReasonRevoked {
		t.Errorf("a revoked certificate after a good one was cached: %+v, %v", res, err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				res, err := e.cur.Verify(ctx, withChain, chainPEM)
				if err == nil && !res.Verified {
					err = fmt.Errorf("not verified: %s", res.Reason)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestCheapReadsWhileOthersRotate: rotations of other agents — through this
// replica or another — leave the cached verify and OCSP answers of a
// certificate they did not change in memory (every rotation moves the
// revocation revision, and before superseded_changes each such move made
// every cached status stale: with a fleet rotating, every verify and every
// OCSP request read the database). The rotated agent's predecessor is seen
// superseded at once; a revocation of any certificate still makes every
// cached status stale.
func TestCheapReadsWhileOthersRotate(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			e := newRotatedEnv(t, db)
			a, b := e.startedReplica(t), e.startedReplica(t)
			watched := e.registerWith(t, a, "watched.acme")
			rotated := e.registerWith(t, a, "rotated.acme")
			e.registerWith(t, a, "revoked.acme")
			req := ocspRequest(t, watched, e.inter2, crypto.SHA256)
			caughtUp := func(r *Registry) { t.Helper(); e.caughtUp(t, r) }
			verified := func(r *Registry, leaf *x509.Certificate) bool {
				t.Helper()
				res, err := r.Verify(ctx, ca.EncodeCertificatesPEM(leaf), nil)
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return res.Verified
			}
			good := func(r *Registry) bool { t.Helper(); return e.ocspStatus(t, r, req) == ocsp.Good }
			type counts struct{ verifyReads, ocspReads int64 }
			reads := func(r *Registry) counts {
				return counts{r.status.reads.Load(), r.revocation.ocspReads.Load()}
			}
			caughtUp(a)
			if !verified(a, watched) || !good(a) || !verified(a, rotated) {
				t.Fatal("fresh certificates must be good")
			}
			for i, via := range []*Registry{a, b, a, b} {
				if _, err := via.Rotate(ctx, SystemActor(), "rotated.acme", newTestCSR(t)); err != nil {
					t.Fatalf("rotation %d: %v", i, err)
				}
				caughtUp(a)
				before := reads(a)
				if !verified(a, watched) || !good(a) {
					t.Fatalf("rotation %d: the watched certificate is no longer good", i)
				}
				if got := reads(a); got != before {
					t.Errorf("rotation %d (through replica %s) of another agent: the watched certificate's status was read again (%+v, then %+v)",
						i, map[*Registry]string{a: "a", b: "b"}[via], before, got)
				}
			}
			// The rotated agent's first certificate, verified before its
			// rotations while cached, is superseded without a grace period.
			if verified(a, rotated) {
				t.Error("the superseded certificate still verifies on replica a")
			}
			// A revocation is not a supersede: every status is read again.
			if _, err := b.Revoke(ctx, SystemActor(), "revoked.acme", "keyCompromise"); err != nil {
				t.Fatal(err)
			}
			caughtUp(a)
			before := reads(a)
			if !verified(a, watched) || !good(a) {
				t.Fatal("the watched certificate is no longer good")
			}
			if got := reads(a); got.verifyReads != before.verifyReads+1 || got.ocspReads != before.ocspReads+1 {
				t.Errorf("after a revocation: reads %+v, then %+v; want one verify and one OCSP read more", before, got)
			}
		})
	}
}

// TestSupersededOCSPNotCached: an OCSP answer cached for a certificate is
// not served after a rotation supersedes it (no grace period), on the
// replica that rotated and on another, whether the certificate row spells
// its serial canonically or without its leading zero (as replicas older
// than migration 004 wrote some, certStore.Status): superseded_changes
// records the stored spelling and the OCSP cache is keyed by the
// canonical one.
func TestSupersededOCSPNotCached(t *testing.T) {
	for _, db := range testdb.Names() {
		for _, tc := range []struct {
			name      string
			shortened bool // the stored serial lacks its leading zero
			viaOther  bool // the rotation goes through the other replica
		}{{"canonical/same replica", false, false}, {"canonical/other replica", false, true},
			{"no leading zero/same replica", true, false}, {"no leading zero/other replica", true, true}} {
			t.Run(db+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				e := newRotatedEnv(t, db)
				a, b := e.startedReplica(t), e.startedReplica(t)
				var leaf *x509.Certificate
				var name string
				for i := 0; leaf == nil || tc.shortened && certSerial(leaf)[0] != '0'; i++ {
					name = fmt.Sprintf("agent%d.acme", i)
					leaf = e.registerWith(t, a, name)
				}
				if tc.shortened {
					s := certSerial(leaf)
					for _, q := range []string{`UPDATE certificates SET serial = ? WHERE serial = ?`, `UPDATE agents SET current_serial = ? WHERE current_serial = ?`} {
						if _, err := e.store.db.ExecContext(ctx, e.store.db.Rebind(q), s[1:], s); err != nil {
							t.Fatal(err)
						}
					}
				}
				req := ocspRequest(t, leaf, e.inter2, crypto.SHA256)
				status := func(r *Registry) int { t.Helper(); return e.ocspStatus(t, r, req) }
				caughtUp := func(r *Registry) { t.Helper(); e.caughtUp(t, r) }
				caughtUp(a)
				if status(a) != ocsp.Good || status(a) != ocsp.Good {
					t.Fatal("a fresh certificate must be good")
				}
				via := a
				if tc.viaOther {
					via = b
				}
				if _, err := via.Rotate(ctx, SystemActor(), name, newTestCSR(t)); err != nil {
					t.Fatal(err)
				}
				caughtUp(a)
				if st := status(a); st != ocsp.Revoked {
					t.Errorf("OCSP status %d of the superseded certificate (stored serial %s), want revoked", st, certSerial(leaf)[map[bool]int{true: 1}[tc.shortened]:])
				}
			})
		}
	}
}

// startedReplica is a Registry on e's Store with its change notifier
// started, a verify cache whose entries only the revision can make stale
// (a TTL far longer than a test), and no rotation grace period.
func (e *rotatedEnv) startedReplica(t *testing.T) *Registry {
	t.Helper()
	r, err := New(Config{Store: e.store, Issuer: e.issuer2, Responders: []*ca.Responder{e.regIssuer.Responder()},
		Verifier: e.cur.verify, TrustDomain: revTrustDomain, RotationGrace: -1, Now: e.clock.Now, Log: e.log,
		VRFSigner: testVRFSigner(t), StatusCacheTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r.status.ttl = time.Hour
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// caughtUp waits until r's notifier is live at the database's revocation
// revision.
func (e *rotatedEnv) caughtUp(t *testing.T, r *Registry) {
	t.Helper()
	var seq int64
	if err := e.store.db.GetContext(context.Background(), &seq, `SELECT seq FROM revocation_state WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(5 * time.Millisecond) { // hang guard, not a timing assertion
		if s, live := r.notify.revocationSeq(); live && s == seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the notifier did not reach revision %d", seq)
		}
	}
}

// ocspStatus is r's OCSP answer to req (a request about a certificate of
// e.inter2), checked against e.inter2.
func (e *rotatedEnv) ocspStatus(t *testing.T, r *Registry, req []byte) int {
	t.Helper()
	der, err := r.OCSP(context.Background(), req)
	if err != nil {
		t.Fatalf("OCSP: %v", err)
	}
	resp, err := ocsp.ParseResponse(der, e.inter2)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status
}
