package registry

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

// TestCertStoreSelectionsMatchStatusAt checks the certificate store's
// selections against the status rule, on both databases: the rows CRLRows
// lists are exactly those statusAt calls revoked (unexpired, of the issuer),
// and the rows Unrevoked returns (what Revoke revokes) exactly those it
// calls good — including a superseded row whose grace period ends at the
// very instant asked about.
func TestCertStoreSelectionsMatchStatusAt(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			s := openMigratedStore(t, db)
			now := dbTime(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
			const agent, issuer = "bot.acme", "ab01"
			if _, err := s.db.ExecContext(ctx, s.db.Rebind(`INSERT INTO agents (name, owner, status, created_at, updated_at) VALUES (?, 'acme', 'active', ?, ?)`),
				agent, now, now); err != nil {
				t.Fatal(err)
			}
			c := certs(s.db)
			n := 0
			insert := func(notAfter time.Time, issuerID string) string {
				t.Helper()
				n++
				rec := &CertificateRecord{Serial: fmt.Sprintf("%02x", n), FingerprintSHA256: fmt.Sprintf("%064x", n),
					NotBefore: now.Add(-time.Hour), NotAfter: notAfter, DER: []byte{0x30, byte(n)}, LogIndex: int64(n), IssuerKeyID: issuerID}
				if err := c.Insert(ctx, newCertRow(agent, rec, now.Add(time.Duration(n)*time.Second))); err != nil {
					t.Fatalf("Insert: %v", err)
				}
				return rec.Serial
			}
			day := now.Add(24 * time.Hour)
			issued := insert(day, issuer)
			inGrace := insert(day, issuer)
			graceEndsNow := insert(day, issuer)
			graceOver := insert(day, issuer)
			noGrace := insert(day, issuer)
			revoked := insert(day, issuer)
			expiredRevoked := insert(now.Add(-time.Minute), issuer)
			otherCA := insert(day, "cd02")
			for serial, grace := range map[string]time.Time{inGrace: now.Add(time.Minute), graceEndsNow: now, graceOver: now.Add(-time.Minute), noGrace: now} {
				if err := c.Supersede(ctx, serial, "ff", grace); err != nil {
					t.Fatalf("Supersede: %v", err)
				}
			}
			if _, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE certificates SET grace_until = NULL WHERE serial = ?`), noGrace); err != nil {
				t.Fatal(err)
			}
			for _, serial := range []string{revoked, expiredRevoked, otherCA} {
				if err := c.Revoke(ctx, serial, "keyCompromise", now.Add(-time.Second)); err != nil {
					t.Fatalf("Revoke: %v", err)
				}
			}
			// Supersede leaves a certificate that is not issued alone.
			if err := c.Supersede(ctx, revoked, "ff", day); err != nil {
				t.Fatal(err)
			}
			if row, err := c.BySerial(ctx, revoked); err != nil || row.Status != CertRevoked || row.GraceUntil != nil {
				t.Fatalf("revoked row after Supersede: %+v, %v", row, err)
			}

			all, err := c.History(ctx, agent)
			if err != nil || len(all) != n {
				t.Fatalf("History: %d rows, %v; want %d", len(all), err, n)
			}
			var wantCRL, wantGood []string
			for _, row := range all {
				st := statusAt(row, now)
				switch {
				case st.good():
					wantGood = append(wantGood, row.Serial)
				case *row.IssuerKeyID == issuer && row.NotAfter.After(now):
					wantCRL = append(wantCRL, row.Serial)
				}
			}
			if want := []string{issued, inGrace}; !slices.Equal(wantGood, want) {
				t.Fatalf("statusAt calls %v good, want %v", wantGood, want)
			}
			// The rows CRLRows streams carry what statusAt reads: the same
			// state as the full rows'.
			crlRows := func(every bool) ([]certRow, error) {
				var out []certRow
				err := c.CRLRows(ctx, issuer, now, every, func(row certRow) error {
					out = append(out, row)
					return nil
				})
				for _, row := range out {
					full := all[slices.IndexFunc(all, func(r certRow) bool { return r.Serial == row.Serial })]
					if got, want := statusAt(row, now), statusAt(full, now); got != want {
						t.Errorf("%s: state from CRLRows' row %+v, from the full row %+v", row.Serial, got, want)
					}
				}
				return out, err
			}
			crl, err := crlRows(false)
			if got := serials(crl); err != nil || !slices.Equal(got, wantCRL) {
				t.Errorf("CRLRows = %v, %v; want %v (statusAt's revoked)", got, err, wantCRL)
			}
			good, err := c.Unrevoked(ctx, agent, now)
			slices.Reverse(good) // newest first
			if got := serials(good); err != nil || !slices.Equal(got, wantGood) {
				t.Errorf("Unrevoked = %v, %v; want %v (statusAt's good)", got, err, wantGood)
			}
			everything, err := crlRows(true)
			if got, want := serials(everything), []string{issued, inGrace, graceEndsNow, graceOver, noGrace, revoked}; err != nil || !slices.Equal(got, want) {
				t.Errorf("CRLRows(all) = %v, %v; want %v", got, err, want)
			}
			if end, err := c.NextGraceEnd(ctx, issuer, now); err != nil || end == nil || !end.Equal(now.Add(time.Minute)) {
				t.Errorf("NextGraceEnd = %v, %v; want %v", end, err, now.Add(time.Minute))
			}
			if end, err := c.NextGraceEnd(ctx, issuer, now.Add(time.Minute)); err != nil || end != nil {
				t.Errorf("NextGraceEnd after the last grace end = %v, %v; want nil", end, err)
			}
		})
	}
}

func serials(rows []certRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Serial
	}
	return out
}

// TestCertStoreLookups covers the lookups and the pending_issuances
// operations on both databases, inside a transaction as the issuance
// commit runs them.
func TestCertStoreLookups(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			s := openMigratedStore(t, db)
			now := dbTime(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
			if _, err := s.db.ExecContext(ctx, s.db.Rebind(`INSERT INTO agents (name, owner, status, created_at, updated_at) VALUES ('bot.acme', 'acme', 'active', ?, ?)`), now, now); err != nil {
				t.Fatal(err)
			}
			// Pending → issued, in a grouped transaction like the issuance.
			p := pendingRow{Serial: "0abc", Agent: "bot.acme", Owner: "acme", Kind: "register", TBS: []byte{1}, CreatedAt: now, UpdatedAt: now}
			if err := s.inTx(ctx, "test", func(tx *sqlx.Tx) error { return certs(tx).InsertPending(ctx, p) }); err != nil {
				t.Fatalf("InsertPending: %v", err)
			}
			p2 := p
			p2.Serial = "0def"
			if err := certs(s.db).InsertPending(ctx, p2); !errors.Is(err, ErrConflict) {
				t.Fatalf("a second issuance in flight for the name: %v, want ErrConflict", err)
			}
			if stale, err := certs(s.db).StalePending(ctx, now.Add(time.Second)); err != nil || len(stale) != 1 || stale[0].Serial != p.Serial {
				t.Fatalf("StalePending = %+v, %v", stale, err)
			}
			rec := &CertificateRecord{Serial: "0abc", FingerprintSHA256: fmt.Sprintf("%064x", 1), NotBefore: now, NotAfter: now.Add(time.Hour), DER: []byte{0x30, 0}, LogIndex: 7}
			err := s.inTxLogged(ctx, "test", func(tx *sqlx.Tx) error {
				if ok, err := certs(tx).SettlePending(ctx, p.Serial, pendingIssued, now); err != nil || !ok {
					return fmt.Errorf("SettlePending(issued) = %v, %v", ok, err)
				}
				return certs(tx).Insert(ctx, newCertRow("bot.acme", rec, now))
			})
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := certs(s.db).Abandon(ctx, p.Serial, now); err != nil || ok {
				t.Errorf("Abandon of an issued row = %v, %v; want false", ok, err)
			}
			if rows, err := certs(s.db).Pending(ctx); err != nil || len(rows) != 1 || rows[0].State != pendingIssued || len(rows[0].TBS) != 1 {
				t.Errorf("Pending = %+v, %v", rows, err)
			}
			if ok, err := certs(s.db).Exists(ctx, "0abc"); err != nil || !ok {
				t.Errorf("Exists = %v, %v", ok, err)
			}
			if row, err := certs(s.db).ByFingerprint(ctx, rec.FingerprintSHA256); err != nil || row.Serial != "0abc" || row.DER != nil || *row.LogIndex != 7 {
				t.Errorf("ByFingerprint = %+v, %v (no DER wanted)", row, err)
			}
			if der, err := certs(s.db).DER(ctx, "0abc"); err != nil || len(der) != 2 {
				t.Errorf("DER = %x, %v", der, err)
			}
			// Status finds a row an older replica wrote without its leading zero.
			if _, err := s.db.ExecContext(ctx, `UPDATE certificates SET serial = 'abc'`); err != nil {
				t.Fatal(err)
			}
			if row, err := certs(s.db).Status(ctx, "0abc"); err != nil || row.Serial != "abc" {
				t.Errorf("Status(0abc) of a row stored as abc = %+v, %v", row, err)
			}
			for name, err := range map[string]error{
				"ByFingerprint": func() error { _, err := certs(s.db).ByFingerprint(ctx, "00"); return err }(),
				"Status":        func() error { _, err := certs(s.db).Status(ctx, "00"); return err }(),
				"DER":           func() error { _, err := certs(s.db).DER(ctx, "00"); return err }(),
			} {
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("%s of a missing certificate: %v, want ErrNotFound", name, err)
				}
			}
		})
	}
}

// TestCertificateSQLOnlyInCertStore keeps the rule that the certificates,
// pending_issuances and server_certificates tables are reached only
// through certstore.go: no other file of the package holds SQL naming them.
func TestCertificateSQLOnlyInCertStore(t *testing.T) {
	sqlOnTables := regexp.MustCompile(`(?i)\b(FROM|INTO|UPDATE|JOIN)\s+(certificates|pending_issuances|server_certificates)\b`)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "certstore.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING && sqlOnTables.MatchString(lit.Value) {
				t.Errorf("%s: SQL on a certificate table outside certstore.go: %.80s", fset.Position(lit.Pos()), lit.Value)
			}
			return true
		})
	}
}
