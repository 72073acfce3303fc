package registry

import (
	"bytes"
	"context"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

// TestCRLKeptAcrossRotations (issue 14, cheap reads): rotations move the
// revocation revision, but a superseded certificate enters the CRL only at
// its grace end, so the CRL a replica made or stored before them is served
// on — by that replica and by another, with no signature — until the
// earliest of their grace ends, or the next revision that is not a
// supersede. Before, each rotation made the next fetch sign the whole list
// again. Grace ends alone make a CRL at most once per crlGraceEndPace.
func TestCRLKeptAcrossRotations(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			e := newRevEnv(t, db, time.Minute)
			r, other := e.replica(RevocationConfig{}), e.replica(RevocationConfig{})
			a := e.register(r, "a.acme")
			b1 := e.register(r, "b.acme")
			c := e.register(r, "c.acme")
			e.revoke(r, "a.acme", "keyCompromise")
			first, der := mustCRL(t, r.svc) // no grace end pending: no StaleAt
			if got := crlEntries(first); len(got) != 1 || got[a.SerialNumber.Text(16)] != ocsp.KeyCompromise {
				t.Fatalf("first CRL entries %v, want a's alone", got)
			}

			unsigned := func(what string, want []byte) {
				t.Helper()
				before := r.signer.n.Load() + other.signer.n.Load()
				for _, rep := range []*replica{r, other} {
					if _, got := mustCRL(t, rep.svc); !bytes.Equal(got, want) {
						t.Fatalf("%s: a CRL other than the one before was served", what)
					}
				}
				if n := r.signer.n.Load() + other.signer.n.Load() - before; n != 0 {
					t.Fatalf("%s: %d CRL signatures, want 0", what, n)
				}
			}
			e.clock.Advance(10 * time.Second)
			b2 := e.rotate(r, "b.acme")
			e.clock.Advance(10 * time.Second)
			e.rotate(other, "b.acme")
			unsigned("after two rotations", der)

			// b1's grace ends (a minute after the first rotation): the CRL
			// lists it, though the CRL kept had no grace end of its own.
			e.clock.Advance(55 * time.Second)
			crl, der := mustCRL(t, r.svc)
			got := crlEntries(crl)
			if crl.Number.Int64() != first.Number.Int64()+1 || got[b1.SerialNumber.Text(16)] != ocsp.Superseded {
				t.Fatalf("after b1's grace end: CRL %d, entries %v; want %d listing %s superseded", crl.Number, got, first.Number.Int64()+1, b1.SerialNumber.Text(16))
			}
			if _, listed := got[b2.SerialNumber.Text(16)]; listed {
				t.Fatalf("b2 is listed before its grace end: %v", got)
			}
			unsigned("the CRL just made", der)

			// A revocation after a rotation is in the very next CRL.
			e.rotate(other, "b.acme")
			e.revoke(other, "c.acme", "cessationOfOperation")
			crl, der = mustCRL(t, r.svc)
			if got := crlEntries(crl); got[c.SerialNumber.Text(16)] != ocsp.CessationOfOperation {
				t.Fatalf("a revocation after a rotation is not in the next CRL: %v", got)
			}

			// Grace ends alone make a CRL at most once per crlGraceEndPace:
			// b2's grace ends 5 s later, and enters the first CRL made a
			// minute after this one.
			e.clock.Advance(10 * time.Second)
			unsigned("b2's grace end, within the pace", der)
			e.clock.Advance(crlGraceEndPace)
			crl, _ = mustCRL(t, r.svc)
			if got := crlEntries(crl); got[b2.SerialNumber.Text(16)] != ocsp.Superseded {
				t.Fatalf("b2 is not listed a pace after its grace end: %v", got)
			}
			if other.svc.keptAcross(context.Background(), nil, 1, e.clock.Now()) != nil {
				t.Fatal("keptAcross kept no CRL")
			}
		})
	}
}
