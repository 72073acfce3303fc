package rp_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/rp"
)

// revocationServer serves CRLs by path and OCSP answers, as the registry's
// GET /v1/crl and POST /v1/ocsp do.
type revocationServer struct {
	*httptest.Server
	mu    sync.Mutex
	crls  map[string][]byte
	ocsp  []byte
	asked int
}

func newRevocationServer(t *testing.T) *revocationServer {
	s := &revocationServer{crls: map[string][]byte{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.asked++
		if r.URL.Path == "/ocsp" {
			if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/ocsp-request" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			body, _ := io.ReadAll(r.Body)
			if _, err := ocsp.ParseRequest(body); err != nil || s.ocsp == nil {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			w.Write(s.ocsp)
			return
		}
		der, ok := s.crls[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(der)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *revocationServer) set(f func(s *revocationServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

type fakeOnline struct {
	st  *rp.OnlineStatus
	err error
}

func (f fakeOnline) CheckOnline(context.Context, *x509.Certificate, []*x509.Certificate) (*rp.OnlineStatus, error) {
	return f.st, f.err
}

func TestVerifier(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	srv := newRevocationServer(t)
	p := newTestPKI(t, "Test", srv.URL+"/root.crl")
	other := newTestPKI(t, "Test", "") // same names, other keys
	leaf := p.leaf(t, leafOpts{crlURL: srv.URL + "/leaf.crl", ocspURL: srv.URL + "/ocsp"})
	chain := []*x509.Certificate{p.issuing}
	roots := []*x509.Certificate{p.root}

	good := p.leafCRL(t, 1, big.NewInt(12345))
	revoked := p.leafCRL(t, 1, leaf.SerialNumber)
	superseded := p.leafCRL(t, 4, leaf.SerialNumber)
	stale := signCRL(t, p.issuing, p.issuingKey, now.Add(-2*time.Hour), now.Add(-time.Hour))
	foreign := other.leafCRL(t, 1)
	rootCRLRevoking := signCRL(t, p.root, p.rootKey, now.Add(-time.Minute), now.Add(time.Hour),
		x509.RevocationListEntry{SerialNumber: p.issuing.SerialNumber, RevocationTime: now.Add(-time.Minute), ReasonCode: 3})
	rootCRLGood := signCRL(t, p.root, p.rootKey, now.Add(-time.Minute), now.Add(time.Hour))
	olderGood := signCRL(t, p.issuing, p.issuingKey, now.Add(-30*time.Minute), now.Add(time.Hour)) // current, but before the revocation
	srv.set(func(s *revocationServer) {
		s.crls["/leaf.crl"] = revoked.Raw
		s.crls["/root.crl"] = rootCRLGood.Raw
	})

	for _, tt := range []struct {
		name       string
		v          rp.Verifier
		leaf       *x509.Certificate
		extra      []*x509.Certificate
		at         time.Time
		want       rp.Reason // "" verified
		wantErr    error     // errors.Is; nil: no error
		wantAnyErr bool
		check      func(t *testing.T, r *rp.Result)
	}{
		{name: "valid with the issuer's CRL", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{good}},
			check: func(t *testing.T, r *rp.Result) {
				if r.Agent != "bot.acme" || r.TrustDomain != "test.local" || r.CRL != good || len(r.Chain) != 3 {
					t.Errorf("agent %q, trust domain %q, CRL %v, chain of %d", r.Agent, r.TrustDomain, r.CRL == good, len(r.Chain))
				}
				if r.FingerprintSHA256 != ca.Fingerprint(leaf) {
					t.Errorf("fingerprint %s", r.FingerprintSHA256)
				}
			}},
		{name: "intermediate in the bundle, none presented", v: rp.Verifier{Roots: roots, Intermediates: chain, CRLs: []*x509.RevocationList{good}}, extra: []*x509.Certificate{}},
		{name: "trust domain pinned", v: rp.Verifier{Roots: roots, TrustDomain: "test.local", CRLs: []*x509.RevocationList{good}}},
		{name: "revoked", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{revoked}}, want: rp.ReasonRevoked,
			check: func(t *testing.T, r *rp.Result) {
				ev := r.Revocation
				if ev == nil || ev.Certificate != leaf || ev.Issuer != p.issuing || ev.CRL != revoked || ev.Entry == nil || ev.ReasonCode != 1 {
					t.Errorf("evidence %+v", ev)
				}
			}},
		{name: "superseded", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{superseded}}, want: rp.ReasonSuperseded},
		{name: "issuer revoked by the root CRL", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{good, rootCRLRevoking}}, want: rp.ReasonIssuerRevoked,
			check: func(t *testing.T, r *rp.Result) {
				if ev := r.Revocation; ev == nil || ev.Certificate != p.issuing || ev.Issuer != p.root || ev.ReasonCode != 3 {
					t.Errorf("evidence %+v", ev)
				}
			}},
		{name: "root CRL clean", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{rootCRLGood, good}}},
		{name: "expired", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{good}}, at: leaf.NotAfter.Add(time.Second), want: rp.ReasonExpired},
		{name: "not yet valid", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{good}}, at: leaf.NotBefore.Add(-time.Second), want: rp.ReasonNotYetValid},
		{name: "certificate of another CA", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{good}},
			leaf: other.leaf(t, leafOpts{}), extra: []*x509.Certificate{other.issuing}, want: rp.ReasonUntrusted},
		{name: "missing intermediate", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{good}}, extra: []*x509.Certificate{}, want: rp.ReasonUntrusted},
		{name: "wrong trust domain pinned", v: rp.Verifier{Roots: roots, TrustDomain: "other.local", CRLs: []*x509.RevocationList{good}}, want: rp.ReasonWrongTrustDomain},
		{name: "not an agent", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{good}},
			leaf: p.leaf(t, leafOpts{uri: "https://example.org/bot"}), want: rp.ReasonNotAgent},
		{name: "stale CRL", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{stale}}, wantErr: rp.ErrStatus},
		{name: "CRL of another CA with the same name", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{foreign}}, wantErr: rp.ErrStatus},
		{name: "only the root's CRL", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{rootCRLGood}}, wantErr: rp.ErrStatus},
		{name: "CRLs fetched from the distribution points", v: rp.Verifier{Roots: roots, FetchCRLs: true}, want: rp.ReasonRevoked},
		{name: "given CRL preferred to fetching", v: rp.Verifier{Roots: roots, FetchCRLs: true, CRLs: []*x509.RevocationList{good}}},
		{name: "fetching without a distribution point", v: rp.Verifier{Roots: roots, FetchCRLs: true},
			leaf: p.leaf(t, leafOpts{}), wantErr: rp.ErrStatus},
		{name: "of two current CRLs the newest counts", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{olderGood, revoked}}, want: rp.ReasonRevoked},
		{name: "online only, trust domain pinned", v: rp.Verifier{TrustDomain: "other.local", Online: fakeOnline{st: &rp.OnlineStatus{Verified: true, Agent: "bot.acme"}}},
			want: rp.ReasonWrongTrustDomain},
		{name: "online only, verified", v: rp.Verifier{Online: fakeOnline{st: &rp.OnlineStatus{Verified: true, Agent: "bot.acme"}}},
			check: func(t *testing.T, r *rp.Result) {
				if r.Online == nil || r.Agent != "bot.acme" || r.Chain != nil {
					t.Errorf("got %+v", r)
				}
			}},
		{name: "online refusal after local checks", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{good},
			Online: fakeOnline{st: &rp.OnlineStatus{Reason: "revoked", Status: "revoked"}}}, want: rp.ReasonOnline},
		{name: "local refusal: the registry is not asked", v: rp.Verifier{Roots: roots, CRLs: []*x509.RevocationList{revoked},
			Online: fakeOnline{err: errors.New("must not be called")}}, want: rp.ReasonRevoked},
		{name: "online error", v: rp.Verifier{Online: fakeOnline{err: io.ErrUnexpectedEOF}}, wantErr: io.ErrUnexpectedEOF},
		{name: "no roots, no online", v: rp.Verifier{CRLs: []*x509.RevocationList{good}}, wantAnyErr: true},
		{name: "no revocation source", v: rp.Verifier{Roots: roots}, wantAnyErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, extra, at := leaf, chain, now
			if tt.leaf != nil {
				l = tt.leaf
			}
			if tt.extra != nil {
				extra = tt.extra
			}
			if !tt.at.IsZero() {
				at = tt.at
			}
			r, err := tt.v.Verify(ctx, l, extra, at)
			switch {
			case tt.wantErr != nil || tt.wantAnyErr:
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("Verify = %+v, %v; want error %v", r, err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("Verify: %v", err)
			}
			if r.Verified != (tt.want == "") || r.Reason != tt.want {
				t.Fatalf("Verify = verified %v, reason %q (%v); want reason %q", r.Verified, r.Reason, r.Err, tt.want)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

func TestVerifierOCSP(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	srv := newRevocationServer(t)
	p := newTestPKI(t, "Test", "")
	other := newTestPKI(t, "Test", "")
	leafKey := mustKey(t)
	leaf := p.leaf(t, leafOpts{ocspURL: srv.URL + "/ocsp", key: leafKey})
	chain := []*x509.Certificate{p.issuing}
	v := rp.Verifier{Roots: []*x509.Certificate{p.root}, OCSP: true}
	// The thief of a (revoked) leaf key answers the OCSP request itself:
	// "good", signed with the leaf's key, the leaf embedded as the
	// responder certificate (x/crypto/ocsp accepts any certificate the
	// issuer signed as a responder).
	selfVouched, err := ocsp.CreateResponse(p.issuing, leaf, ocsp.Response{Status: ocsp.Good, SerialNumber: leaf.SerialNumber,
		ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour), Certificate: leaf}, leafKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		answer  []byte
		leaf    *x509.Certificate
		want    rp.Reason
		wantErr bool
	}{
		{name: "good", answer: p.ocspAnswer(t, leaf, ocsp.Good, 0, now.Add(-time.Minute), now.Add(time.Hour))},
		{name: "good, no nextUpdate (replayable forever)", answer: p.ocspAnswer(t, leaf, ocsp.Good, 0, now.Add(-time.Minute), time.Time{}), wantErr: true},
		{name: "signed by the leaf's own key as a delegated responder", answer: selfVouched, wantErr: true},
		{name: "revoked", answer: p.ocspAnswer(t, leaf, ocsp.Revoked, ocsp.KeyCompromise, now.Add(-time.Minute), now.Add(time.Hour)), want: rp.ReasonRevoked},
		{name: "superseded", answer: p.ocspAnswer(t, leaf, ocsp.Revoked, ocsp.Superseded, now.Add(-time.Minute), now.Add(time.Hour)), want: rp.ReasonSuperseded},
		{name: "unknown", answer: p.ocspAnswer(t, leaf, ocsp.Unknown, 0, now.Add(-time.Minute), now.Add(time.Hour)), want: rp.ReasonStatusUnknown},
		{name: "stale", answer: p.ocspAnswer(t, leaf, ocsp.Good, 0, now.Add(-2*time.Hour), now.Add(-time.Hour)), wantErr: true},
		{name: "not yet valid", answer: p.ocspAnswer(t, leaf, ocsp.Good, 0, now.Add(time.Hour), now.Add(2*time.Hour)), wantErr: true},
		{name: "signed by another CA of the same name", answer: other.ocspAnswer(t, leaf, ocsp.Good, 0, now.Add(-time.Minute), now.Add(time.Hour)), wantErr: true},
		{name: "for another certificate", answer: p.ocspAnswer(t, p.leaf(t, leafOpts{}), ocsp.Good, 0, now.Add(-time.Minute), now.Add(time.Hour)), wantErr: true},
		{name: "garbage", answer: []byte("not ocsp"), wantErr: true},
		{name: "no responder in the certificate", leaf: p.leaf(t, leafOpts{}), answer: []byte("unused"), wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv.set(func(s *revocationServer) { s.ocsp = tt.answer })
			l := leaf
			if tt.leaf != nil {
				l = tt.leaf
			}
			r, err := v.Verify(ctx, l, chain, now)
			if tt.wantErr {
				if !errors.Is(err, rp.ErrStatus) {
					t.Fatalf("Verify = %+v, %v; want ErrStatus", r, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if r.Reason != tt.want || r.Verified != (tt.want == "") {
				t.Fatalf("reason %q verified %v, want %q", r.Reason, r.Verified, tt.want)
			}
			if r.OCSP == nil {
				t.Error("no OCSP evidence")
			}
			if tt.want == rp.ReasonRevoked && (r.Revocation == nil || r.Revocation.OCSP == nil || r.Revocation.ReasonCode != ocsp.KeyCompromise) {
				t.Errorf("evidence %+v", r.Revocation)
			}
		})
	}
}

func TestCheckCRL(t *testing.T) {
	now := time.Now()
	p := newTestPKI(t, "Test", "")
	other := newTestPKI(t, "Test", "")
	for _, tt := range []struct {
		name string
		crl  *x509.RevocationList
		ok   bool
	}{
		{"current", signCRL(t, p.issuing, p.issuingKey, now.Add(-time.Minute), now.Add(time.Hour)), true},
		{"stale", signCRL(t, p.issuing, p.issuingKey, now.Add(-2*time.Hour), now.Add(-time.Hour)), false},
		{"nextUpdate now", signCRL(t, p.issuing, p.issuingKey, now.Add(-time.Hour), now), false},
		{"not yet valid", signCRL(t, p.issuing, p.issuingKey, now.Add(time.Minute), now.Add(time.Hour)), false},
		{"another CA's key", signCRL(t, other.issuing, other.issuingKey, now.Add(-time.Minute), now.Add(time.Hour)), false},
		{"the root's", signCRL(t, p.root, p.rootKey, now.Add(-time.Minute), now.Add(time.Hour)), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := rp.CheckCRL(tt.crl, p.issuing, now); (err == nil) != tt.ok {
				t.Errorf("CheckCRL = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
