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
		})
	}
}

// TestCRLReplicasAgreeAtAGraceEnd (review of keptAcross): a replica that
// kept a CRL across a rotation and another that first fetches after the
// grace end, within the pace, serve the same CRL; after the pace both serve
// the next, which lists the superseded certificate. In the first version
// the second replica made the next CRL at once and the first went on
// serving the older number until the pace ran out.
func TestCRLReplicasAgreeAtAGraceEnd(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			e := newRevEnv(t, db, 20*time.Second)
			r, other := e.replica(RevocationConfig{}), e.replica(RevocationConfig{})
			e.register(r, "a.acme")
			b1 := e.register(r, "b.acme")
			e.revoke(r, "a.acme", "keyCompromise")
			first, _ := mustCRL(t, r.svc)
			e.clock.Advance(5 * time.Second)
			e.rotate(r, "b.acme")
			mustCRL(t, r.svc)                 // kept across the rotation
			e.clock.Advance(25 * time.Second) // past b1's grace end, within the pace
			numbers := func(want int64, listed bool) {
				t.Helper()
				for i, rep := range []*replica{other, r} {
					crl, _ := mustCRL(t, rep.svc)
					_, has := crlEntries(crl)[b1.SerialNumber.Text(16)]
					if crl.Number.Int64() != want || has != listed {
						t.Fatalf("replica %d serves CRL %d listing b1 %t; want %d, %t", i, crl.Number, has, want, listed)
					}
				}
			}
			numbers(first.Number.Int64(), false)
			e.clock.Advance(crlGraceEndPace)
			numbers(first.Number.Int64()+1, true)
		})
	}
}

// TestSupersedesOnly: the revisions in a range are all recorded supersedes
// of certificates with a grace end, and the earliest end is returned; a
// revocation, a certificate without a grace end, a pruned row or an empty
// range is not.
func TestSupersedesOnly(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			e := newRevEnv(t, db, time.Minute)
			r := e.replica(RevocationConfig{})
			for _, name := range []string{"a.acme", "b.acme", "c.acme", "d.acme"} {
				e.register(r, name)
			}
			seq := func() int64 {
				t.Helper()
				s, err := r.svc.revocationSeq(ctx, r.store.db)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			s0 := seq()
			firstEnd := e.clock.Now().Add(time.Minute)
			e.rotate(r, "a.acme")
			e.clock.Advance(10 * time.Second)
			e.rotate(r, "b.acme")
			s1 := seq()
			e.revoke(r, "c.acme", "keyCompromise")
			e.rotate(r, "a.acme")
			s2 := seq()
			e.rotate(r, "d.acme")
			s3 := seq()
			// d's predecessor loses its grace end (no trigger allows it but a
			// hand edit: it moves the revision too, without a row).
			exec := func(q string, args ...any) {
				t.Helper()
				if _, err := r.store.db.ExecContext(ctx, r.store.db.Rebind(q), args...); err != nil {
					t.Fatal(err)
				}
			}
			exec(`UPDATE certificates SET grace_until = NULL WHERE fingerprint_sha256 = (SELECT fingerprint_sha256 FROM superseded_changes WHERE seq = ?)`, s3)
			for _, tt := range []struct {
				name        string
				after, upto int64
				ok          bool
			}{
				{"two rotations", s0, s1, true},
				{"a revocation between", s0, s2, false},
				{"the rotation after it alone", s2 - 1, s2, true},
				{"a certificate without a grace end", s2, s3, false},
				{"an empty range", s1, s1, false},
			} {
				t.Run(tt.name, func(t *testing.T) {
					end, ok, err := certs(r.store.db).SupersedesOnly(ctx, tt.after, tt.upto)
					if err != nil || ok != tt.ok {
						t.Fatalf("SupersedesOnly(%d, %d) = %v, %t, %v; want ok %t", tt.after, tt.upto, end, ok, err, tt.ok)
					}
					if tt.name == "two rotations" && !end.Equal(firstEnd.Truncate(time.Microsecond)) && !end.Equal(firstEnd) {
						t.Errorf("earliest grace end %v, want %v", end, firstEnd)
					}
				})
			}
			exec(`DELETE FROM superseded_changes WHERE seq = ?`, s0+1)
			if _, ok, err := certs(r.store.db).SupersedesOnly(ctx, s0, s1); err != nil || ok {
				t.Fatalf("across a pruned row: ok %t, %v; want false", ok, err)
			}
		})
	}
}
