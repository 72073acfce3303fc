package rp_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

// A relying party verifies an agent's certificate offline: the chain to the
// roots of the CA bundle (GET /v1/ca/bundle), and the issuing CA's CRL
// (GET /v1/crl, or the certificate's CRL distribution point). The files
// are rp/testdata's (testdata/gen.go); the time is fixed for the example,
// a relying party passes time.Now().
func ExampleVerifier() {
	roots, intermediates, err := rp.LoadCABundle("testdata/bundle.pem")
	if err != nil {
		log.Fatal(err)
	}
	data, err := os.ReadFile("testdata/agent.pem")
	if err != nil {
		log.Fatal(err)
	}
	certs, err := ca.ParseCertificatesPEM(data, 0)
	if err != nil {
		log.Fatal(err)
	}
	leaf, presented := certs[0], certs[1:]
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

	for _, crlFile := range []string{"testdata/agent.crl.pem", "testdata/revoked.crl.pem"} {
		crl, err := rp.LoadCRL(crlFile)
		if err != nil {
			log.Fatal(err)
		}
		v := rp.Verifier{Roots: roots, Intermediates: intermediates, TrustDomain: "example.org",
			CRLs: []*x509.RevocationList{crl}}
		res, err := v.Verify(context.Background(), leaf, presented, now)
		switch {
		case errors.Is(err, rp.ErrStatus):
			log.Fatalf("cannot tell whether it is revoked: %v", err)
		case err != nil:
			log.Fatal(err)
		case res.Verified:
			fmt.Printf("verified: agent %s of %s, serial %s (CRL %s)\n", res.Agent, res.TrustDomain, res.Serial, res.CRL.Number)
		default:
			ev := res.Revocation
			fmt.Printf("not verified: %s (%s) by %q on %s (CRL %s)\n", res.Reason, ca.ReasonName(ev.ReasonCode),
				ev.Issuer.Subject.CommonName, ev.RevokedAt.Format(time.DateOnly), ev.CRL.Number)
		}
	}
	// Output:
	// verified: agent billing-bot.acme of example.org, serial 1234 (CRL 1)
	// not verified: revoked (keyCompromise) by "Example Issuing" on 2026-01-02 (CRL 2)
}

// exampleLog is a log of a few entries held in memory, as an rp.AuditLog.
// A real one reads the registry's API (GET /v1/log/checkpoint, …).
type exampleLog struct {
	key     *ecdsa.PrivateKey
	entries [][]byte
	hashes  memHashes
}

func (l *exampleLog) Checkpoint(ctx context.Context) ([]byte, error) {
	root, err := translog.RootHash(ctx, &l.hashes, int64(len(l.entries)))
	if err != nil {
		return nil, err
	}
	s, err := translog.NewNoteSigner("example.org/log", l.key)
	if err != nil {
		return nil, err
	}
	return translog.SignCheckpoint(translog.Checkpoint{Origin: "example.org/log", Size: int64(len(l.entries)), Hash: root}, s)
}

func (l *exampleLog) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
	return translog.ConsistencyProof(ctx, &l.hashes, oldSize, newSize)
}

func (l *exampleLog) InclusionProof(ctx context.Context, index, size int64) (tlog.RecordProof, error) {
	return translog.InclusionProof(ctx, &l.hashes, index, size)
}

func (l *exampleLog) Entries(_ context.Context, start, end int64) ([][]byte, error) {
	return l.entries[start:min(end, int64(len(l.entries)))], nil
}

// An auditor checks the log's checkpoint against the one it saw last time,
// recomputes the root from every entry, and finds a certificate's issuance.
func ExampleAuditor() {
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	data, _ := os.ReadFile("testdata/agent.pem")
	cert, _ := ca.ParseCertificatesPEM(data, 0)
	l := &exampleLog{key: key}
	for i, fp := range []string{fmt.Sprintf("%064x", 1), ca.Fingerprint(cert[0]), fmt.Sprintf("%064x", 3)} {
		e := translog.Entry{Type: translog.EventRegister, Time: time.Date(2026, 1, 2, 0, 0, i, 0, time.UTC),
			Fingerprint: fp, IssuerKeyID: "abcd", NameIndexes: []string{fmt.Sprintf("%064x", 100+i)}}
		leaf, _ := e.Marshal()
		translog.Append(ctx, &l.hashes, int64(len(l.entries)), leaf)
		l.entries = append(l.entries, leaf)
	}
	previous, _ := l.Checkpoint(ctx) // what the last run saved

	// The pinned key: the PEM of GET /v1/log/key, or GET /v1/log/vkey.
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	logKey, err := rp.ParseLogKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		log.Fatal(err)
	}
	a := rp.Auditor{Log: l, Key: logKey}
	cc, err := a.Checkpoint(ctx, previous)
	if err != nil {
		log.Fatal(err) // an *rp.AuditError: rollback, fork, bad signature… with the evidence
	}
	fmt.Printf("checkpoint %s size %d, consistent with the one of size %d\n", cc.Checkpoint.Origin, cc.Checkpoint.Size, cc.Previous.Size)
	found, err := a.Entries(ctx, cc, true, cert[0])
	var ae *rp.AuditError
	switch {
	case errors.As(err, &ae):
		log.Fatalf("the log misbehaves: %s at index %d", ae.Reason, ae.Index)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Printf("all entries canonical, root recomputed; issuance at index %d (%s)\n", found.Index, found.Entry.Type)
	// Output:
	// checkpoint example.org/log size 3, consistent with the one of size 3
	// all entries canonical, root recomputed; issuance at index 1 (register)
}
