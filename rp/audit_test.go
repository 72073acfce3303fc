package rp_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

// auditLog is a log built with translog and signed with a P-256 key: an
// rp.AuditLog (and rp.LogSource) in memory. served limits the tree the
// checkpoint advertises (-1: all); tamper replaces entries as served; page
// bounds the entries of one answer.
type auditLog struct {
	t       testing.TB
	origin  string
	signer  note.Signer
	entries [][]byte
	hashes  *memHashes
	served  int64
	tamper  map[int64][]byte
	page    int
}

func newAuditLog(t testing.TB, origin string, key *ecdsa.PrivateKey) *auditLog {
	t.Helper()
	s, err := translog.NewNoteSigner(origin, key)
	if err != nil {
		t.Fatal(err)
	}
	return &auditLog{t: t, origin: origin, signer: s, hashes: &memHashes{}, served: -1, tamper: map[int64][]byte{}, page: 3}
}

func (l *auditLog) append(data ...[]byte) *auditLog {
	l.t.Helper()
	for _, d := range data {
		if err := translog.Append(context.Background(), l.hashes, int64(len(l.entries)), d); err != nil {
			l.t.Fatal(err)
		}
		l.entries = append(l.entries, d)
	}
	return l
}

func (l *auditLog) size() int64 {
	if l.served >= 0 {
		return l.served
	}
	return int64(len(l.entries))
}

func (l *auditLog) signed(size int64) []byte {
	l.t.Helper()
	root, err := translog.RootHash(context.Background(), l.hashes, size)
	if err != nil {
		l.t.Fatal(err)
	}
	msg, err := translog.SignCheckpoint(translog.Checkpoint{Origin: l.origin, Size: size, Hash: root}, l.signer)
	if err != nil {
		l.t.Fatal(err)
	}
	return msg
}

func (l *auditLog) Checkpoint(context.Context) ([]byte, error) { return l.signed(l.size()), nil }

func (l *auditLog) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
	return translog.ConsistencyProof(ctx, l.hashes, oldSize, newSize)
}

func (l *auditLog) InclusionProof(ctx context.Context, index, size int64) (tlog.RecordProof, error) {
	return translog.InclusionProof(ctx, l.hashes, index, size)
}

func (l *auditLog) Entries(_ context.Context, start, end int64) ([][]byte, error) {
	end = min(end, l.size(), start+int64(l.page))
	var out [][]byte
	for i := start; i < end; i++ {
		d := l.entries[i]
		if td, ok := l.tamper[i]; ok {
			d = td
		}
		out = append(out, d)
	}
	return out, nil
}

// agentEntry is a canonical version 2 register entry of fingerprint fp
// (default: derived from i).
func agentEntry(t testing.TB, i int, typ translog.EventType, fp string) []byte {
	t.Helper()
	if fp == "" {
		fp = fmt.Sprintf("%064x", i+1)
	}
	e := translog.Entry{Type: typ, Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC), Fingerprint: fp, IssuerKeyID: "abcd",
		NameIndexes: []string{fmt.Sprintf("%064x", 1000+i)}}
	switch typ {
	case translog.EventRotate:
		e.Previous = fmt.Sprintf("%064x", 5000+i)
	case translog.EventRevoke:
		e.Reason = "keyCompromise"
	}
	data, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// v1Entry is a canonical version 1 register entry.
func v1Entry(t testing.TB, i int) []byte {
	t.Helper()
	e := translog.Entry{Version: translog.EntryVersion1, Type: translog.EventRegister, Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC),
		Agent: fmt.Sprintf("bot-%d.acme", i), Serial: fmt.Sprintf("%x", 0x1000+i), Fingerprint: fmt.Sprintf("%064x", i+1), Actor: "key:test"}
	data, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// serverCertEntry is the version 2 server_cert entry of cert.
func serverCertEntry(t testing.TB, i int, cert *x509.Certificate) []byte {
	t.Helper()
	e := translog.Entry{Type: translog.EventServerCert, Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC),
		Fingerprint: ca.Fingerprint(cert), IssuerKeyID: "abcd", Certificate: cert.Raw}
	data, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func pemKey(t testing.TB, k *ecdsa.PrivateKey) rp.LogKey {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	lk, err := rp.ParseLogKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return lk
}

func TestAuditor(t *testing.T) {
	ctx := context.Background()
	const origin = "test.local/log"
	key, otherKey := mustKey(t), mustKey(t)
	p := newTestPKI(t, "Test", "")
	agentCert := p.leaf(t, leafOpts{})
	serverCert := p.leaf(t, leafOpts{uri: "spiffe://test.local/registry"})
	stranger := p.leaf(t, leafOpts{})

	// 0-2 version 1, 3-9 version 2: the agent's register at 4, its revoke
	// at 7, the registry's server certificate at 6.
	build := func() *auditLog {
		l := newAuditLog(t, origin, key)
		for i := range 3 {
			l.append(v1Entry(t, i))
		}
		l.append(agentEntry(t, 3, translog.EventRegister, ""), agentEntry(t, 4, translog.EventRegister, ca.Fingerprint(agentCert)),
			agentEntry(t, 5, translog.EventRotate, ""), serverCertEntry(t, 6, serverCert),
			agentEntry(t, 7, translog.EventRevoke, ca.Fingerprint(agentCert)), agentEntry(t, 8, translog.EventRegister, ""),
			agentEntry(t, 9, translog.EventRegister, ""))
		return l
	}
	base := build()
	vkey, err := translog.VerifierKey(origin, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	vk, err := rp.ParseLogKey([]byte(vkey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	// fork is another log of the same key: entries 0-1 as base's, then others.
	fork := func(served int64) func() *auditLog {
		return func() *auditLog {
			l := newAuditLog(t, origin, key)
			l.append(base.entries[:2]...)
			for i := 2; i < 12; i++ {
				l.append(agentEntry(t, i+100, translog.EventRegister, ""))
			}
			l.served = served
			return l
		}
	}

	for _, tt := range []struct {
		name      string
		log       func() *auditLog
		key       *rp.LogKey
		origin    string
		previous  []byte
		full      bool
		cert      *x509.Certificate
		want      rp.AuditReason // "" passes
		wantIndex int64          // AuditError.Index or Found.Index
		check     func(t *testing.T, f *rp.Found, ae *rp.AuditError)
	}{
		{name: "signed, no previous", wantIndex: -1},
		{name: "full, PEM key", full: true, wantIndex: -1},
		{name: "verifier key string", key: &vk, full: true, wantIndex: -1},
		{name: "agent certificate, full: issuance and revocation", full: true, cert: agentCert, wantIndex: 4,
			check: func(t *testing.T, f *rp.Found, _ *rp.AuditError) {
				if len(f.RevokedAt) != 1 || f.RevokedAt[0] != 7 || f.Entry.Type != translog.EventRegister {
					t.Errorf("revoked at %v, entry %+v", f.RevokedAt, f.Entry)
				}
			}},
		{name: "agent certificate, without full", cert: agentCert, wantIndex: 4},
		{name: "server certificate (server_cert entry)", cert: serverCert, wantIndex: 6,
			check: func(t *testing.T, f *rp.Found, _ *rp.AuditError) {
				if f.Entry.Type != translog.EventServerCert {
					t.Errorf("entry type %s", f.Entry.Type)
				}
			}},
		{name: "server certificate, full", full: true, cert: serverCert, wantIndex: 6},
		{name: "consistent with a smaller previous", previous: base.signed(5), full: true, wantIndex: -1},
		{name: "same previous", previous: base.signed(10), wantIndex: -1},
		{name: "empty previous", previous: base.signed(0), wantIndex: -1},
		{name: "certificate not in the log", cert: stranger, want: rp.AuditNotFound, wantIndex: -1},
		{name: "signed by another key", key: ptr(pemKey(t, otherKey)), want: rp.AuditBadSignature, wantIndex: -1,
			check: func(t *testing.T, _ *rp.Found, ae *rp.AuditError) {
				if !bytes.HasPrefix(ae.Checkpoint, []byte(origin+"\n10\n")) {
					t.Errorf("evidence checkpoint %q", ae.Checkpoint)
				}
			}},
		{name: "wrong origin pinned", origin: "evil.local/log", want: rp.AuditBadSignature, wantIndex: -1},
		{name: "verifier key of another origin", key: &vk, origin: "evil.local/log", want: rp.AuditWrongOrigin, wantIndex: -1},
		{name: "previous by another key", previous: newAuditLog(t, origin, otherKey).append(agentEntry(t, 0, translog.EventRegister, "")).signed(1),
			want: rp.AuditBadPrevious, wantIndex: -1},
		{name: "rollback", log: func() *auditLog { l := build(); l.served = 5; return l }, previous: base.signed(10), want: rp.AuditRollback, wantIndex: -1},
		{name: "fork: same size, other root", log: fork(10), previous: base.signed(10), want: rp.AuditFork, wantIndex: -1,
			check: func(t *testing.T, _ *rp.Found, ae *rp.AuditError) {
				if ae.Want == ae.Got || ae.Previous == nil || ae.Checkpoint == nil {
					t.Errorf("evidence %+v", ae)
				}
			}},
		{name: "inconsistent: a larger tree that does not extend", log: fork(-1), previous: base.signed(5),
			want: rp.AuditInconsistent, wantIndex: -1,
			check: func(t *testing.T, _ *rp.Found, ae *rp.AuditError) {
				if len(ae.Proof) == 0 {
					t.Error("no proof in the evidence")
				}
			}},
		{name: "tampered entry, full", log: func() *auditLog {
			l := build()
			l.tamper[4] = bytes.Replace(l.entries[4], []byte(`"abcd"`), []byte(`"abce"`), 1)
			return l
		}, full: true, want: rp.AuditRootMismatch, wantIndex: -1},
		{name: "tampered certificate entry: not included", log: func() *auditLog {
			l := build()
			l.tamper[4] = bytes.Replace(l.entries[4], []byte(`"abcd"`), []byte(`"abce"`), 1)
			return l
		}, cert: agentCert, want: rp.AuditNotIncluded, wantIndex: 4,
			check: func(t *testing.T, _ *rp.Found, ae *rp.AuditError) {
				if ae.Entry == nil || ae.Got == ae.Want {
					t.Errorf("evidence %+v", ae)
				}
			}},
		{name: "non-canonical entry", log: func() *auditLog {
			l := build()
			l.tamper[2] = append([]byte(" "), l.entries[2]...)
			return l
		}, full: true, want: rp.AuditBadEntry, wantIndex: 2},
		{name: "version 1 after version 2", log: func() *auditLog {
			l := newAuditLog(t, origin, key)
			return l.append(v1Entry(t, 0), agentEntry(t, 1, translog.EventRegister, ""), v1Entry(t, 2))
		}, full: true, want: rp.AuditEntryOrder, wantIndex: 2},
		{name: "version 1 after version 2, looking for a certificate", log: func() *auditLog {
			l := newAuditLog(t, origin, key)
			return l.append(agentEntry(t, 1, translog.EventRegister, ""), v1Entry(t, 2), agentEntry(t, 3, translog.EventRegister, ca.Fingerprint(agentCert)))
		}, cert: agentCert, want: rp.AuditEntryOrder, wantIndex: 1},
		{name: "server certificate entry carrying another certificate", log: func() *auditLog {
			l := newAuditLog(t, origin, key)
			e, _ := translog.ParseEntry(serverCertEntry(t, 0, serverCert))
			e.Certificate = stranger.Raw
			data, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			return l.append(data)
		}, cert: serverCert, want: rp.AuditEntryChanged, wantIndex: 0},
		{name: "empty page", log: func() *auditLog { l := build(); l.page = 0; return l }, full: true, want: rp.AuditBadAnswer, wantIndex: 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := base
			if tt.log != nil {
				l = tt.log()
			}
			k := pemKey(t, key)
			if tt.key != nil {
				k = *tt.key
			}
			a := rp.Auditor{Log: l, Key: k, Origin: tt.origin}
			f, err := audit(ctx, a, tt.previous, tt.full, tt.cert)
			var ae *rp.AuditError
			if tt.want == "" {
				if err != nil {
					t.Fatalf("audit: %v", err)
				}
				if f.Index != tt.wantIndex {
					t.Errorf("index %d, want %d", f.Index, tt.wantIndex)
				}
			} else {
				if !errors.As(err, &ae) || !errors.Is(err, rp.ErrAudit) {
					t.Fatalf("audit = %v, want an *AuditError %s", err, tt.want)
				}
				if ae.Reason != tt.want || ae.Index != tt.wantIndex {
					t.Fatalf("reason %s index %d, want %s %d (%v)", ae.Reason, ae.Index, tt.want, tt.wantIndex, ae)
				}
			}
			if tt.check != nil {
				tt.check(t, f, ae)
			}
		})
	}
}

// audit runs both steps of the Auditor.
func audit(ctx context.Context, a rp.Auditor, previous []byte, full bool, cert *x509.Certificate) (*rp.Found, error) {
	cc, err := a.Checkpoint(ctx, previous)
	if err != nil {
		return nil, err
	}
	if previous != nil && cc.Previous == nil {
		return nil, errors.New("no previous in the result")
	}
	return a.Entries(ctx, cc, full, cert)
}

func ptr[T any](v T) *T { return &v }
