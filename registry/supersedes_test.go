package registry

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

func sup(seq int64, name string) supersededChange {
	return supersededChange{Seq: seq, Serial: "serial-" + name, Fingerprint: "fp-" + name}
}

// TestSupersedeLog: which cached statuses the log keeps across revisions —
// those of certificates no recorded supersede after their revision names,
// while every revision since is a recorded supersede — through gaps,
// restores, jumps and a full ring.
func TestSupersedeLog(t *testing.T) {
	type check struct {
		name  string
		since int64
		want  bool
	}
	type step struct {
		to     int64
		rows   []supersededChange
		checks []check
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first revision: only itself", []step{
			{to: 10, checks: []check{{"x", 10, true}, {"x", 9, false}, {"x", 11, false}}},
		}},
		{"supersedes name what they changed", []step{
			{to: 10},
			{to: 13, rows: []supersededChange{sup(11, "a"), sup(12, "b"), sup(13, "c")}, checks: []check{
				{"x", 10, true}, {"a", 10, false}, {"a", 11, true}, {"b", 11, false}, {"b", 12, true},
				{"c", 12, false}, {"c", 13, true}, {"x", 9, false}, {"x", 14, false},
			}},
		}},
		{"rows outside the revisions asked for are ignored", []step{
			{to: 10},
			{to: 12, rows: []supersededChange{sup(9, "old"), sup(11, "a"), sup(12, "b"), sup(13, "later")}, checks: []check{
				{"old", 10, true}, {"later", 10, true}, {"a", 10, false}, {"x", 10, true},
			}},
		}},
		{"a revision without its row at the end", []step{
			{to: 10},
			{to: 12, rows: []supersededChange{sup(11, "a")}, checks: []check{{"x", 11, false}, {"x", 12, true}, {"a", 12, true}}},
		}},
		{"a revision without its row in the middle", []step{
			{to: 10},
			{to: 14, rows: []supersededChange{sup(11, "a"), sup(13, "b"), sup(14, "c")}, checks: []check{
				{"x", 11, false}, {"x", 12, true}, {"b", 12, false}, {"b", 13, true}, {"a", 12, true},
			}},
		}},
		{"no rows at all", []step{
			{to: 10},
			{to: 11, checks: []check{{"x", 10, false}, {"x", 11, true}}},
		}},
		{"a restore: nothing seen before is current until the revision passes it", []step{
			{to: 10},
			{to: 12, rows: []supersededChange{sup(11, "a"), sup(12, "b")}},
			{to: 5, checks: []check{{"x", 5, false}, {"x", 10, false}, {"x", 12, false}}},
			{to: 12, rows: []supersededChange{sup(6, "c"), sup(7, "d"), sup(8, "e"), sup(9, "f"), sup(10, "g"), sup(11, "h"), sup(12, "i")},
				checks: []check{{"x", 11, false}, {"x", 12, false}}},
			{to: 14, rows: []supersededChange{sup(13, "j"), sup(14, "k")}, checks: []check{
				{"x", 12, false}, {"x", 13, true}, {"j", 13, true}, {"k", 13, false}, {"i", 13, true},
			}},
		}},
		{"a jump longer than the log", []step{
			{to: 10},
			{to: 10 + supersedeLogSize + 1, checks: []check{{"x", 10, false}, {"x", 10 + supersedeLogSize + 1, true}}},
		}},
		{"the same revision again changes nothing", []step{
			{to: 10},
			{to: 11, rows: []supersededChange{sup(11, "a")}},
			{to: 11, checks: []check{{"x", 10, true}, {"a", 10, false}}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newSupersedeLog()
			for i, s := range tt.steps {
				if after, ok := l.wants(s.to); ok && after >= s.to {
					t.Fatalf("step %d: wants rows after %d for revision %d", i, after, s.to)
				}
				l.advance(s.to, s.rows)
				for _, c := range s.checks {
					if got := l.fingerprintUnchanged("fp-"+c.name, c.since); got != c.want {
						t.Errorf("step %d (to %d): fingerprintUnchanged(%s, %d) = %v, want %v", i, s.to, c.name, c.since, got, c.want)
					}
					if got := l.serialUnchanged("serial-"+c.name, c.since); got != c.want {
						t.Errorf("step %d (to %d): serialUnchanged(%s, %d) = %v, want %v", i, s.to, c.name, c.since, got, c.want)
					}
				}
			}
		})
	}
	t.Run("nil log", func(t *testing.T) {
		var l *supersedeLog
		if l.fingerprintUnchanged("fp", 0) {
			t.Error("a nil log keeps a status")
		}
	})
}

// TestSupersedeLogRing: when the log is full its oldest supersede goes, and
// with it every revision up to it.
func TestSupersedeLogRing(t *testing.T) {
	l := newSupersedeLog()
	l.advance(0, nil)
	var rows []supersededChange
	for i := int64(1); i <= supersedeLogSize+2; i++ {
		rows = append(rows, sup(i, fmt.Sprint(i)))
		if len(rows) == supersedeLogSize || i == supersedeLogSize+2 {
			if after, ok := l.wants(i); !ok || after != rows[0].Seq-1 {
				t.Fatalf("wants(%d) = %d, %v", i, after, ok)
			}
			l.advance(i, rows)
			rows = nil
		}
	}
	last := int64(supersedeLogSize + 2)
	for _, c := range []struct {
		name  string
		since int64
		want  bool
	}{{"x", 1, false}, {"x", 2, true}, {"1", 2, true}, {"2", 2, true}, {"3", 2, false}, {"x", last, true}} {
		if got := l.fingerprintUnchanged("fp-"+c.name, c.since); got != c.want {
			t.Errorf("fingerprintUnchanged(%s, %d) = %v, want %v", c.name, c.since, got, c.want)
		}
	}
	if len(l.byFP) != supersedeLogSize || len(l.bySerial) != supersedeLogSize {
		t.Errorf("%d fingerprints and %d serials kept, want %d", len(l.byFP), len(l.bySerial), supersedeLogSize)
	}
}

// TestSupersededChangesRecorded: on both databases a rotation's supersede
// records its predecessor under the revision it moved to, a revocation
// records nothing, and PruneSupersededChanges drops the rows older than the
// last supersededKeep revisions.
func TestSupersededChangesRecorded(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			e := newRotatedEnv(t, db)
			r := e.cur
			first := e.registerWith(t, r, "rotated.acme")
			e.registerWith(t, r, "revoked.acme")
			seq := func() int64 {
				t.Helper()
				var s int64
				if err := e.store.db.GetContext(ctx, &s, `SELECT seq FROM revocation_state WHERE id = 1`); err != nil {
					t.Fatal(err)
				}
				return s
			}
			rows := func() []supersededChange {
				t.Helper()
				var out []supersededChange
				if err := e.store.db.SelectContext(ctx, &out, `SELECT seq, serial, fingerprint_sha256 FROM superseded_changes ORDER BY seq`); err != nil {
					t.Fatal(err)
				}
				return out
			}
			before := seq()
			if _, err := r.Rotate(ctx, SystemActor(), "rotated.acme", newTestCSR(t)); err != nil {
				t.Fatal(err)
			}
			got := rows()
			want := supersededChange{Seq: before + 1, Serial: certSerial(first), Fingerprint: certFingerprint(first)}
			if len(got) != 1 || got[0] != want || seq() != before+1 {
				t.Fatalf("after a rotation: rows %+v, revision %d; want [%+v] at revision %d", got, seq(), want, before+1)
			}
			if _, err := r.Revoke(ctx, SystemActor(), "revoked.acme", "keyCompromise"); err != nil {
				t.Fatal(err)
			}
			if got := rows(); len(got) != 1 || seq() != before+2 {
				t.Fatalf("after a revocation: rows %+v, revision %d; want the rotation's row alone at revision %d", got, seq(), before+2)
			}
			if n, err := r.PruneSupersededChanges(ctx); err != nil || n != 0 {
				t.Fatalf("PruneSupersededChanges = %d, %v; want nothing old enough", n, err)
			}
			if _, err := e.store.db.ExecContext(ctx, e.store.db.Rebind(`UPDATE revocation_state SET seq = seq + ? WHERE id = 1`), supersededKeep); err != nil {
				t.Fatal(err)
			}
			if n, err := r.PruneSupersededChanges(ctx); err != nil || n != 1 || len(rows()) != 0 {
				t.Fatalf("PruneSupersededChanges = %d, %v, %d rows left; want the row pruned", n, err, len(rows()))
			}
		})
	}
}

// certSerial and certFingerprint spell c's serial and SHA-256 fingerprint
// as the certificates table stores them.
func certSerial(c *x509.Certificate) string { return ca.FormatSerial(c.SerialNumber) }

func certFingerprint(c *x509.Certificate) string {
	fp := sha256.Sum256(c.Raw)
	return hex.EncodeToString(fp[:])
}
