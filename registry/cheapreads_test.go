package registry

import (
	"context"
	"crypto"
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
			mk := func() *Registry {
				r, err := New(Config{Store: e.store, Issuer: e.issuer2, Responders: []*ca.Responder{e.regIssuer.Responder()},
					Verifier: e.cur.verify, TrustDomain: revTrustDomain, RotationGrace: -1, Now: e.clock.Now, Log: e.log,
					VRFSigner: testVRFSigner(t), StatusCacheTTL: time.Second})
				if err != nil {
					t.Fatal(err)
				}
				r.status.ttl = time.Hour
				if err := r.Start(ctx); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				return r
			}
			a, b := mk(), mk()
			leaf := e.registerWith(t, a, "bot.acme")
			req := ocspRequest(t, leaf, e.inter2, crypto.SHA256)
			pemLeaf := ca.EncodeCertificatesPEM(leaf)
			status := func(r *Registry) int {
				t.Helper()
				der, err := r.OCSP(ctx, req)
				if err != nil {
					t.Fatalf("OCSP: %v", err)
				}
				resp, err := ocsp.ParseResponse(der, e.inter2)
				if err != nil {
					t.Fatal(err)
				}
				return resp.Status
			}
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
