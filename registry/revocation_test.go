package registry

// Tests of the CRL and OCSP channels (revocation.go) on a real SoftHSM2
// token and real SQLite and PostgreSQL. This is an internal test (package
// registry): registrytest imports registry, so it cannot be used here; the
// small CA below is built the same way (hsmtest tokens, ca ceremony
// templates). hsmtest.Setup runs in TestMain (main_test.go).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

const revTrustDomain = "agents.revocation.test"

// revCountingSigner counts the signatures of the issuing key; while a gate
// is set, each signature first reports on entered and waits for release.
type revCountingSigner struct {
	crypto.Signer
	n    atomic.Int64
	gate atomic.Pointer[revSignGate]
}

type revSignGate struct{ entered, release chan struct{} }

func (c *revCountingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	c.n.Add(1)
	if g := c.gate.Load(); g != nil {
		g.entered <- struct{}{}
		<-g.release
	}
	return c.Signer.Sign(r, digest, opts)
}

// revClock is a fake clock safe for concurrent use.
type revClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *revClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *revClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// revEnv is one CA on a SoftHSM2 token and one database that several
// "replicas" (Store + Registry + revocationService) share.
type revEnv struct {
	t           testing.TB
	db, url     string
	root, inter *x509.Certificate
	issuingKey  crypto.Signer
	rootKey     crypto.Signer
	tok         *hsm.Token
	regIssuer   *ca.Issuer // issuance (not counted)
	clock       *revClock
	log         *logrus.Entry
	dir         string // PEM files for openssl
	grace       time.Duration
}

func newRevEnv(t testing.TB, db string, grace time.Duration) *revEnv {
	t.Helper()
	ctx := context.Background()
	e := &revEnv{t: t, db: db, clock: &revClock{now: time.Now().UTC()}, dir: t.TempDir(), grace: grace}
	e.log = hsmtest.Logger(t)
	e.log.Logger.SetLevel(logrus.WarnLevel)
	tok := hsmtest.Open(t, hsmtest.NewToken(t, "atr-revocation"))
	rootKey, err := tok.GenerateKey(ctx, "root", hsm.ECDSAP256)
	if err != nil {
		t.Fatalf("generating root key: %v", err)
	}
	issKey, err := tok.GenerateKey(ctx, "issuing", hsm.ECDSAP256)
	if err != nil {
		t.Fatalf("generating issuing key: %v", err)
	}
	e.issuingKey, e.rootKey, e.tok = issKey, rootKey, tok
	caNow := e.clock.Now().Add(-time.Hour)
	rootTmpl, err := ca.RootTemplate("ATR Revocation Test Root", 0, caNow)
	if err != nil {
		t.Fatalf("root template: %v", err)
	}
	if e.root, err = ca.CreateCertificate(rootTmpl, rootTmpl, rootKey.Public(), rootKey); err != nil {
		t.Fatalf("root certificate: %v", err)
	}
	interTmpl, err := ca.IntermediateTemplate("ATR Revocation Test Issuing CA", revTrustDomain, 0, caNow)
	if err != nil {
		t.Fatalf("intermediate template: %v", err)
	}
	if e.inter, err = ca.CreateCertificate(interTmpl, e.root, issKey.Public(), rootKey); err != nil {
		t.Fatalf("intermediate certificate: %v", err)
	}
	e.regIssuer = e.newIssuer(issKey)
	e.writePEM("root.pem", e.root)
	e.writePEM("inter.pem", e.inter)
	e.writePEM("bundle.pem", e.inter, e.root)
	e.url = testdb.URL(t, db)
	return e
}

func (e *revEnv) newIssuer(s crypto.Signer) *ca.Issuer {
	e.t.Helper()
	iss, err := ca.NewIssuer(s, e.inter, []*x509.Certificate{e.root}, ca.Profile{TrustDomain: revTrustDomain,
		CRLURL: "https://registry.revocation.test/v1/crl", OCSPURL: "https://registry.revocation.test/v1/ocsp"})
	if err != nil {
		e.t.Fatalf("issuer: %v", err)
	}
	return iss
}

func (e *revEnv) writePEM(name string, certs ...*x509.Certificate) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, ca.EncodeCertificatesPEM(certs...), 0o600); err != nil {
		e.t.Fatalf("writing %s: %v", name, err)
	}
	return p
}

// replica is one server process: its own Store (connection pool), Registry
// and revocation service, on the shared database.
type replica struct {
	store  *Store
	reg    *Registry
	svc    *revocationService
	signer *revCountingSigner // the service's signatures
}

func (e *revEnv) replica(cfg RevocationConfig) *replica {
	e.t.Helper()
	ctx := context.Background()
	st, err := Open(ctx, e.url, e.log)
	if err != nil {
		e.t.Fatalf("opening %s: %v", e.db, err)
	}
	e.t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		e.t.Fatalf("migrating: %v", err)
	}
	grace := e.grace
	if grace == 0 {
		grace = -1
	}
	reg, err := New(Config{Store: st, Issuer: e.regIssuer, TrustDomain: revTrustDomain, RotationGrace: grace, Now: e.clock.Now, Log: e.log, VRFSigner: testVRFSigner(e.t)})
	if err != nil {
		e.t.Fatalf("registry.New: %v", err)
	}
	cs := &revCountingSigner{Signer: e.issuingKey}
	return &replica{store: st, reg: reg, signer: cs, svc: newRevocationService(st, e.newIssuer(cs), cfg, e.clock.Now, e.log)}
}

// register registers name and returns its certificate.
func (e *revEnv) register(r *replica, name string) *x509.Certificate {
	e.t.Helper()
	iss, err := r.reg.Register(context.Background(), SystemActor(), RegisterRequest{Name: name, CSR: newTestCSR(e.t)})
	if err != nil {
		e.t.Fatalf("Register(%s): %v", name, err)
	}
	return parseTestPEM(e.t, iss.CertificatePEM)
}

func (e *revEnv) rotate(r *replica, name string) *x509.Certificate {
	e.t.Helper()
	iss, err := r.reg.Rotate(context.Background(), SystemActor(), name, newTestCSR(e.t))
	if err != nil {
		e.t.Fatalf("Rotate(%s): %v", name, err)
	}
	return parseTestPEM(e.t, iss.CertificatePEM)
}

func (e *revEnv) revoke(r *replica, name, reason string) {
	e.t.Helper()
	if _, err := r.reg.Revoke(context.Background(), SystemActor(), name, reason); err != nil {
		e.t.Fatalf("Revoke(%s): %v", name, err)
	}
}

func newTestCSR(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("agent key: %v", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatalf("csr: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func parseTestPEM(t testing.TB, s string) *x509.Certificate {
	t.Helper()
	certs, err := ca.ParseCertificatesPEM([]byte(s), 1)
	if err != nil {
		t.Fatalf("parsing certificate: %v", err)
	}
	return certs[0]
}

// openssl runs openssl or skips (fails under CI=true) when it is missing.
func openssl(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is required in CI")
		}
		t.Skip("openssl not installed")
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mustCRL(t *testing.T, svc *revocationService) (*x509.RevocationList, []byte) {
	t.Helper()
	der, next, err := svc.crl(context.Background())
	if err != nil {
		t.Fatalf("crl: %v", err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("parsing CRL: %v", err)
	}
	if !crl.NextUpdate.Equal(next) {
		t.Fatalf("crl: returned nextUpdate %v, CRL says %v", next, crl.NextUpdate)
	}
	return crl, der
}

// crlEntries maps serial (hex) → reason code.
func crlEntries(crl *x509.RevocationList) map[string]int {
	m := map[string]int{}
	for _, e := range crl.RevokedCertificateEntries {
		m[e.SerialNumber.Text(16)] = e.ReasonCode
	}
	return m
}

func TestRevocationCRL(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			e := newRevEnv(t, db, time.Minute)
			r := e.replica(RevocationConfig{})
			a := e.register(r, "a.acme")
			b := e.register(r, "b.acme")
			c1 := e.register(r, "c.acme")
			c2 := e.rotate(r, "c.acme")
			e.revoke(r, "a.acme", "keyCompromise")

			crl, der := mustCRL(t, r.svc)
			if got, want := crl.Number.Int64(), int64(1); got != want {
				t.Fatalf("first CRL number = %d, want %d", got, want)
			}
			if got, want := crl.NextUpdate.Sub(crl.ThisUpdate), DefaultCRLValidity; got != want {
				t.Errorf("CRL validity = %v, want %v", got, want)
			}
			if err := crl.CheckSignatureFrom(e.inter); err != nil {
				t.Fatalf("CRL signature: %v", err)
			}
			got := crlEntries(crl)
			if len(got) != 1 || got[a.SerialNumber.Text(16)] != ocsp.KeyCompromise {
				t.Fatalf("CRL entries = %v, want only %s with keyCompromise", got, a.SerialNumber.Text(16))
			}

			// openssl accepts it and lists the serial with its reason.
			crlPath := filepath.Join(e.dir, "crl.der")
			if err := os.WriteFile(crlPath, der, 0o600); err != nil {
				t.Fatal(err)
			}
			out := openssl(t, "crl", "-inform", "DER", "-in", crlPath, "-CAfile", filepath.Join(e.dir, "bundle.pem"), "-verify", "-noout", "-text")
			for _, want := range []string{`verify OK`, `Serial Number: 0*` + strings.ToUpper(a.SerialNumber.Text(16)) + `\s+Revocation Date`,
				`CRL Reason Code:\s+Key Compromise`, `CRL Number:\s+1\n`} {
				if !regexp.MustCompile(want).MatchString(out) {
					t.Errorf("openssl crl output does not match %q:\n%s", want, out)
				}
			}

			// Nothing changed: the same CRL is served, no signature.
			before := r.signer.n.Load()
			if _, der2 := mustCRL(t, r.svc); !bytes.Equal(der2, der) {
				t.Errorf("unchanged state: CRL was regenerated")
			}
			if n := r.signer.n.Load() - before; n != 0 {
				t.Errorf("unchanged state: %d signatures, want 0", n)
			}

			// c1's grace period ends: it enters as superseded, at its grace end.
			e.clock.Advance(2 * time.Minute)
			crl, _ = mustCRL(t, r.svc)
			if got, want := crl.Number.Int64(), int64(2); got != want {
				t.Errorf("CRL number after grace end = %d, want %d", got, want)
			}
			got = crlEntries(crl)
			if got[c1.SerialNumber.Text(16)] != ocsp.Superseded || len(got) != 2 {
				t.Errorf("CRL entries after grace end = %v, want %s superseded too", got, c1.SerialNumber.Text(16))
			}
			for _, en := range crl.RevokedCertificateEntries {
				if en.SerialNumber.Cmp(c1.SerialNumber) == 0 {
					grace := r.certificate(t, c1).GraceUntil
					if grace == nil || !en.RevocationTime.Equal(grace.Truncate(time.Second)) {
						t.Errorf("superseded entry time = %v, want grace end %v", en.RevocationTime, grace)
					}
				}
			}

			// A revocation is in the very next CRL.
			e.revoke(r, "b.acme", "cessationOfOperation")
			crl, _ = mustCRL(t, r.svc)
			got = crlEntries(crl)
			if crl.Number.Int64() != 3 || got[b.SerialNumber.Text(16)] != ocsp.CessationOfOperation {
				t.Errorf("after revoking b: number %d entries %v", crl.Number, got)
			}
			if _, ok := got[c2.SerialNumber.Text(16)]; ok {
				t.Errorf("c's current certificate is listed: %v", got)
			}

			// At 2/3 of its validity the CRL is renewed, with a new number.
			e.clock.Advance(DefaultCRLValidity*2/3 - time.Minute)
			if crl, _ = mustCRL(t, r.svc); crl.Number.Int64() != 3 {
				t.Errorf("before 2/3 of validity: CRL number %d, want 3 (reused)", crl.Number)
			}
			e.clock.Advance(2 * time.Minute)
			if crl, _ = mustCRL(t, r.svc); crl.Number.Int64() != 4 || len(crl.RevokedCertificateEntries) != 3 {
				t.Errorf("after 2/3 of validity: CRL number %d with %d entries, want 4 with 3", crl.Number, len(crl.RevokedCertificateEntries))
			}

			// Entries leave the CRL once their certificates expired.
			e.clock.Advance(ca.DefaultLeafLifetime)
			if err := r.svc.refresh(context.Background()); err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if crl, _ = mustCRL(t, r.svc); crl.Number.Int64() != 5 || len(crl.RevokedCertificateEntries) != 0 {
				t.Errorf("after expiry: CRL number %d with entries %v, want 5 with none", crl.Number, crlEntries(crl))
			}
		})
	}
}

// crlResult is what a CRL fetch returned.
type crlResult struct {
	der []byte
	err error
}

// holdCRLSignature fetches r's CRL on a goroutine and returns once the CRL
// is being signed, its signature held until the gate is released; the
// fetch's result arrives on made.
func holdCRLSignature(t *testing.T, r *replica) (g *revSignGate, made <-chan crlResult) {
	t.Helper()
	g = &revSignGate{entered: make(chan struct{}, 1), release: make(chan struct{})}
	r.signer.gate.Store(g)
	defer r.signer.gate.Store(nil)
	ch := make(chan crlResult, 1)
	go func() {
		der, _, err := r.svc.crl(context.Background())
		ch <- crlResult{der, err}
	}()
	select {
	case <-g.entered:
	case res := <-ch:
		t.Fatalf("CRL made without a signature: %v", res.err)
	case <-time.After(time.Minute):
		t.Fatal("the CRL was never signed")
	}
	return g, ch
}

// A CRL is made off the group commit's writer. While a CRL is being made —
// every unexpired revoked or superseded row read, the list signed — the
// registry goes on issuing: on SQLite the regeneration ran inside a write
// transaction of the one writer, so every issuance of the process waited for
// it (a second for a CRL of 48,000 entries; docs/performance-history.md, fifteenth
// pass). The CRL made meanwhile is stored and served as before.
func TestCRLMadeOffTheWriter(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			e := newRevEnv(t, db, time.Minute)
			r := e.replica(RevocationConfig{})
			a := e.register(r, "a.acme")
			e.revoke(r, "a.acme", "keyCompromise")

			g, made := holdCRLSignature(t, r)

			// With the CRL's signature held, an agent registers: its pending
			// row, its certificate, its log entry and audit event commit.
			issued := make(chan error, 1)
			go func() {
				_, err := r.reg.Register(context.Background(), SystemActor(), RegisterRequest{Name: "b.acme", CSR: newTestCSR(t)})
				issued <- err
			}()
			select {
			case err := <-issued:
				if err != nil {
					t.Fatalf("Register while a CRL is signed: %v", err)
				}
			case <-time.After(time.Minute):
				close(g.release)
				<-made
				t.Fatal("a registration waited for the CRL being made: the regeneration holds the writer")
			}
			close(g.release)
			if res := <-made; res.err != nil {
				t.Fatalf("crl: %v", res.err)
			}

			before := r.signer.n.Load()
			crl, _ := mustCRL(t, r.svc)
			if n := r.signer.n.Load() - before; n != 0 {
				t.Errorf("the CRL made while b registered was not stored: %d more signatures", n)
			}
			if got := crlEntries(crl); len(got) != 1 || got[a.SerialNumber.Text(16)] != ocsp.KeyCompromise || crl.Number.Int64() != 1 {
				t.Errorf("CRL %d entries %v, want number 1 with only %s (keyCompromise)", crl.Number, got, a.SerialNumber.Text(16))
			}
		})
	}
}

// Two processes on one SQLite file make CRLs off the writer at once. The
// one whose number the other took with a CRL older than its fetch (made
// before x was revoked) drops its CRL unseen and makes one again under the
// next number, with x on it. (On PostgreSQL a CRL is made under the row
// lock, so the second replica waits for the first instead:
// TestRevocationCRLReplicas.)
func TestCRLMadeAgainWhenItsNumberWasTaken(t *testing.T) {
	e := newRevEnv(t, "sqlite", time.Minute)
	ra, rb := e.replica(RevocationConfig{}), e.replica(RevocationConfig{})
	w := e.register(ra, "w.acme")
	e.revoke(ra, "w.acme", "keyCompromise")
	gb, madeB := holdCRLSignature(t, rb) // CRL 1, without x

	x := e.register(ra, "x.acme")
	e.revoke(ra, "x.acme", "cessationOfOperation")
	ga, madeA := holdCRLSignature(t, ra) // also CRL 1, with x

	close(gb.release)
	if res := <-madeB; res.err != nil {
		t.Fatalf("other process: crl: %v", res.err)
	}
	close(ga.release)
	res := <-madeA
	if res.err != nil {
		t.Fatalf("crl: %v", res.err)
	}
	crl, err := x509.ParseRevocationList(res.der)
	if err != nil {
		t.Fatal(err)
	}
	got := crlEntries(crl)
	if crl.Number.Int64() != 2 || got[w.SerialNumber.Text(16)] != ocsp.KeyCompromise || got[x.SerialNumber.Text(16)] != ocsp.CessationOfOperation {
		t.Errorf("CRL %d with %v, want number 2 listing w and x", crl.Number, got)
	}
	if n := ra.signer.n.Load(); n != 2 {
		t.Errorf("%d CRL signatures, want 2 (the dropped CRL 1 and CRL 2)", n)
	}
	if crlB, _ := mustCRL(t, rb.svc); crlB.Number.Int64() != 2 {
		t.Errorf("other process serves CRL %d, want the stored CRL 2", crlB.Number)
	}
}

// Fetches of one process make one CRL at a time, and a fetch adopts a CRL
// stored after it began. Here the first fetch signs CRL 1 and is held; an
// agent is revoked (the revision moves), a second fetch begins, and another
// is revoked. The first stores CRL 1; the second, which began after the
// first revocation, makes CRL 2 once the first is done. (Rotations alone
// would not do: a CRL stays current across supersedes, crlkept_test.go.) A review of the first
// version found the livelock this prevents: both fetches made a CRL at
// once, and the one whose number was taken — by a CRL made after it began,
// but not at the revision of that moment — made one again, up to 4 times,
// and then failed while rotations went on.
func TestCRLFetchesOfOneProcessMakeOneAtATime(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			e := newRevEnv(t, db, time.Minute)
			r := e.replica(RevocationConfig{})
			e.register(r, "a.acme")
			e.revoke(r, "a.acme", "keyCompromise")
			e.register(r, "b.acme")
			e.register(r, "c.acme")
			g, first := holdCRLSignature(t, r)

			e.revoke(r, "b.acme", "keyCompromise")
			second := make(chan crlResult, 1)
			go func() {
				der, _, err := r.svc.crl(context.Background())
				second <- crlResult{der, err}
			}()
			e.revoke(r, "c.acme", "keyCompromise")
			close(g.release)

			for i, ch := range []<-chan crlResult{first, second} {
				res := <-ch
				if res.err != nil {
					t.Fatalf("fetch %d: %v", i+1, res.err)
				}
				crl, err := x509.ParseRevocationList(res.der)
				if err != nil {
					t.Fatal(err)
				}
				if want := int64(i + 1); crl.Number.Int64() != want {
					t.Errorf("fetch %d: CRL %d, want %d", i+1, crl.Number, want)
				}
			}
			if n := r.signer.n.Load(); n != 2 {
				t.Errorf("%d CRL signatures, want 2", n)
			}
		})
	}
}

// certificate reads a certificate row through the registry.
func (r *replica) certificate(t *testing.T, c *x509.Certificate) CertificateRecord {
	t.Helper()
	var row struct {
		GraceUntil *time.Time `db:"grace_until"`
		RevokedAt  *time.Time `db:"revoked_at"`
	}
	if err := r.store.db.Get(&row, r.store.db.Rebind(`SELECT grace_until, revoked_at FROM certificates WHERE serial = ?`), ca.FormatSerial(c.SerialNumber)); err != nil {
		t.Fatalf("reading certificate row: %v", err)
	}
	return CertificateRecord{GraceUntil: row.GraceUntil, RevokedAt: row.RevokedAt}
}

// Two replicas on one database never reuse a CRL number, and both serve a
// revocation made on either at once.
func TestRevocationCRLReplicas(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			e := newRevEnv(t, db, 0)
			ra, rb := e.replica(RevocationConfig{}), e.replica(RevocationConfig{})
			last := int64(0)
			for i := range 6 {
				name := "agent" + string(rune('a'+i)) + ".acme"
				cert := e.register(ra, name)
				e.revoke([]*replica{ra, rb}[i%2], name, "keyCompromise")
				var (
					wg   sync.WaitGroup
					crls [2]*x509.RevocationList
					errs [2]error
				)
				for k, r := range []*replica{ra, rb} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						der, _, err := r.svc.crl(context.Background())
						if err == nil {
							crls[k], err = x509.ParseRevocationList(der)
						}
						errs[k] = err
					}()
				}
				wg.Wait()
				for k := range 2 {
					if errs[k] != nil {
						t.Fatalf("round %d replica %d: %v", i, k, errs[k])
					}
					if _, ok := crlEntries(crls[k])[cert.SerialNumber.Text(16)]; !ok {
						t.Errorf("round %d replica %d: revoked serial missing from CRL %d", i, k, crls[k].Number)
					}
				}
				if a, b := crls[0].Number.Int64(), crls[1].Number.Int64(); a != b {
					t.Errorf("round %d: replicas serve CRL numbers %d and %d for one state", i, a, b)
				} else if a <= last {
					t.Errorf("round %d: CRL number %d not above %d", i, a, last)
				} else {
					last = a
				}
			}
			// On PostgreSQL one CRL is made per round in total: the slower
			// replica adopted the faster one's instead of signing its own. On
			// SQLite a CRL is made off the writer, before the row is locked,
			// so both processes may sign one; the one stored second under the
			// same number is dropped unseen (both serve one number, above).
			got := ra.signer.n.Load() + rb.signer.n.Load()
			if want := int64(6); (db == "postgres" && got != want) || got < want || got > 2*want {
				t.Errorf("CRL signatures over 6 rounds = %d, want 6 (on SQLite at most 12)", got)
			}
		})
	}
}

func ocspRequest(t testing.TB, leaf, issuer *x509.Certificate, h crypto.Hash) []byte {
	t.Helper()
	req, err := ocsp.CreateRequest(leaf, issuer, &ocsp.RequestOptions{Hash: h})
	if err != nil {
		t.Fatalf("ocsp.CreateRequest: %v", err)
	}
	return req
}

func mustOCSP(t testing.TB, svc *revocationService, req []byte, leaf, issuer *x509.Certificate) (*ocsp.Response, []byte) {
	t.Helper()
	der, err := svc.ocsp(context.Background(), req)
	if err != nil {
		t.Fatalf("ocsp: %v", err)
	}
	resp, err := ocsp.ParseResponseForCert(der, leaf, issuer)
	if err != nil {
		t.Fatalf("parsing OCSP response: %v", err)
	}
	return resp, der
}

// opensslOCSP checks a response with openssl ocsp (no network) and returns
// its report.
func (e *revEnv) opensslOCSP(t *testing.T, leaf *x509.Certificate, resp []byte) string {
	t.Helper()
	leafPath := e.writePEM("leaf.pem", leaf)
	respPath := filepath.Join(e.dir, "resp.der")
	if err := os.WriteFile(respPath, resp, 0o600); err != nil {
		t.Fatal(err)
	}
	out := openssl(t, "ocsp", "-issuer", filepath.Join(e.dir, "inter.pem"), "-cert", leafPath, "-respin", respPath,
		"-CAfile", filepath.Join(e.dir, "bundle.pem"), "-no_nonce", "-resp_text")
	if !strings.Contains(out, "Response verify OK") {
		t.Errorf("openssl ocsp did not verify the response:\n%s", out)
	}
	return out
}

func TestRevocationOCSPGoodThenRevoked(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			e := newRevEnv(t, db, 0)
			r := e.replica(RevocationConfig{})
			leaf := e.register(r, "bot.acme")
			req := ocspRequest(t, leaf, e.inter, crypto.SHA1)

			resp, der := mustOCSP(t, r.svc, req, leaf, e.inter)
			if resp.Status != ocsp.Good {
				t.Fatalf("status = %d, want good", resp.Status)
			}
			if got := resp.NextUpdate.Sub(resp.ThisUpdate); got != DefaultOCSPValidity {
				t.Errorf("validity = %v, want %v", got, DefaultOCSPValidity)
			}
			if out := e.opensslOCSP(t, leaf, der); !strings.Contains(out, "leaf.pem: good") {
				t.Errorf("openssl ocsp does not report good:\n%s", out)
			}

			e.revoke(r, "bot.acme", "keyCompromise")
			resp, der = mustOCSP(t, r.svc, req, leaf, e.inter)
			if resp.Status != ocsp.Revoked || resp.RevocationReason != ocsp.KeyCompromise {
				t.Fatalf("after revocation: status %d reason %d, want revoked keyCompromise", resp.Status, resp.RevocationReason)
			}
			if ra := r.certificate(t, leaf).RevokedAt; ra == nil || !resp.RevokedAt.Equal(ra.Truncate(time.Second)) {
				t.Errorf("revokedAt = %v, want %v", resp.RevokedAt, ra)
			}
			out := e.opensslOCSP(t, leaf, der)
			if !strings.Contains(out, "leaf.pem: revoked") || !strings.Contains(out, "keyCompromise") {
				t.Errorf("openssl ocsp does not report revoked (keyCompromise):\n%s", out)
			}

			// Requests hashed with SHA-256 are answered in kind.
			resp, _ = mustOCSP(t, r.svc, ocspRequest(t, leaf, e.inter, crypto.SHA256), leaf, e.inter)
			if resp.Status != ocsp.Revoked || resp.IssuerHash != crypto.SHA256 {
				t.Errorf("SHA-256 request: status %d hash %v", resp.Status, resp.IssuerHash)
			}
		})
	}
}

// A superseded certificate is good during its grace period (and never
// beyond it), then revoked with reason superseded.
func TestRevocationOCSPSuperseded(t *testing.T) {
	e := newRevEnv(t, "sqlite", 2*time.Minute)
	r := e.replica(RevocationConfig{})
	old := e.register(r, "bot.acme")
	e.rotate(r, "bot.acme")
	grace := r.certificate(t, old).GraceUntil
	req := ocspRequest(t, old, e.inter, crypto.SHA1)
	resp, _ := mustOCSP(t, r.svc, req, old, e.inter)
	if resp.Status != ocsp.Good || resp.NextUpdate.After(*grace) {
		t.Errorf("in grace: status %d nextUpdate %v, want good until at most %v", resp.Status, resp.NextUpdate, grace)
	}
	e.clock.Advance(3 * time.Minute)
	resp, _ = mustOCSP(t, r.svc, req, old, e.inter)
	if resp.Status != ocsp.Revoked || resp.RevocationReason != ocsp.Superseded || !resp.RevokedAt.Equal(grace.Truncate(time.Second)) {
		t.Errorf("after grace: status %d reason %d at %v, want revoked superseded at %v", resp.Status, resp.RevocationReason, resp.RevokedAt, grace)
	}
}

// Malformed requests get malformedRequest, other CAs unauthorized, never an
// error; serials never issued get a signed "unknown".
func TestRevocationOCSPRefusals(t *testing.T) {
	e := newRevEnv(t, "sqlite", 0)
	r := e.replica(RevocationConfig{})
	leaf := e.register(r, "bot.acme")
	good := ocspRequest(t, leaf, e.inter, crypto.SHA1)

	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherTmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Another CA"}, NotBefore: time.Now(),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	otherDER, _ := x509.CreateCertificate(rand.Reader, otherTmpl, otherTmpl, otherKey.Public(), otherKey)
	other, _ := x509.ParseCertificate(otherDER)
	sameNameOtherKey := *e.inter
	sameNameOtherKey.RawSubjectPublicKeyInfo = other.RawSubjectPublicKeyInfo
	sameNameOtherKey.PublicKey = other.PublicKey
	serialCert := func(n *big.Int) *x509.Certificate { return &x509.Certificate{SerialNumber: n} }

	tests := []struct {
		name string
		req  []byte
		want []byte
	}{
		{"empty", nil, ocsp.MalformedRequestErrorResponse},
		{"garbage", []byte("GET / HTTP/1.1\r\n"), ocsp.MalformedRequestErrorResponse},
		{"truncated", good[:len(good)-3], ocsp.MalformedRequestErrorResponse},
		{"trailing data", append(append([]byte{}, good...), 0), ocsp.MalformedRequestErrorResponse},
		{"oversized", bytes.Repeat([]byte{0x30}, MaxOCSPRequestSize+1), ocsp.MalformedRequestErrorResponse},
		{"zero serial", ocspRequest(t, serialCert(big.NewInt(0)), e.inter, crypto.SHA1), ocsp.MalformedRequestErrorResponse},
		{"negative serial", ocspRequest(t, serialCert(big.NewInt(-5)), e.inter, crypto.SHA1), ocsp.MalformedRequestErrorResponse},
		{"21-octet serial", ocspRequest(t, serialCert(new(big.Int).Lsh(big.NewInt(1), 164)), e.inter, crypto.SHA1), ocsp.MalformedRequestErrorResponse},
		{"other CA", ocspRequest(t, leaf, other, crypto.SHA1), ocsp.UnauthorizedErrorResponse},
		{"our name, other key", ocspRequest(t, leaf, &sameNameOtherKey, crypto.SHA256), ocsp.UnauthorizedErrorResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.svc.ocsp(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("ocsp: error %v, want an OCSP error response", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("ocsp = %x, want %x", got, tt.want)
			}
		})
	}

	t.Run("unknown serial", func(t *testing.T) {
		never := serialCert(new(big.Int).SetBytes(bytes.Repeat([]byte{0x42}, 16)))
		resp, _ := mustOCSP(t, r.svc, ocspRequest(t, never, e.inter, crypto.SHA1), never, e.inter)
		if resp.Status != ocsp.Unknown {
			t.Fatalf("status = %d, want unknown", resp.Status)
		}
	})
	t.Run("unknown serial, signing disabled", func(t *testing.T) {
		r2 := e.replica(RevocationConfig{UnknownSignRate: -1})
		never := serialCert(big.NewInt(0x4243))
		got, err := r2.svc.ocsp(context.Background(), ocspRequest(t, never, e.inter, crypto.SHA1))
		if err != nil || !bytes.Equal(got, ocsp.UnauthorizedErrorResponse) {
			t.Fatalf("ocsp = %x, %v; want unauthorized", got, err)
		}
		if n := r2.signer.n.Load(); n != 0 {
			t.Errorf("%d signatures, want 0", n)
		}
	})
	t.Run("random unknown serials are rate limited", func(t *testing.T) {
		r3 := e.replica(RevocationConfig{UnknownSignRate: 3})
		for i := range 50 {
			_, err := r3.svc.ocsp(context.Background(), ocspRequest(t, serialCert(big.NewInt(int64(1000+i))), e.inter, crypto.SHA1))
			if err != nil {
				t.Fatalf("ocsp: %v", err)
			}
		}
		if n := r3.signer.n.Load(); n > 4 {
			t.Errorf("50 random unknown serials cost %d signatures, want at most the burst (3, +1 refill)", n)
		}
	})
}

// A flood of identical queries is one HSM signature; a revocation costs one
// more; 2/3 into the validity the response is re-signed once.
func TestRevocationOCSPFlood(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			e := newRevEnv(t, db, 0)
			r := e.replica(RevocationConfig{})
			leaf := e.register(r, "bot.acme")
			req := ocspRequest(t, leaf, e.inter, crypto.SHA1)
			flood := func(want int) {
				t.Helper()
				var wg sync.WaitGroup
				errs := make(chan error, 1000)
				for range 1000 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						der, err := r.svc.ocsp(context.Background(), req)
						if err == nil {
							var resp *ocsp.Response
							if resp, err = ocsp.ParseResponseForCert(der, leaf, e.inter); err == nil && resp.Status != want {
								err = errors.New("wrong status")
							}
						}
						if err != nil {
							errs <- err
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatalf("flood: %v", err)
				}
			}
			flood(ocsp.Good)
			if n := r.signer.n.Load(); n < 1 || n > 2 {
				t.Errorf("1000 identical queries: %d signatures, want 1 (at most 2)", n)
			}
			e.revoke(r, "bot.acme", "")
			flood(ocsp.Revoked)
			if n := r.signer.n.Load(); n < 2 || n > 3 {
				t.Errorf("after revocation and 1000 queries: %d signatures in all, want 2", n)
			}
			base := r.signer.n.Load()
			e.clock.Advance(DefaultOCSPValidity*2/3 - time.Second)
			mustOCSP(t, r.svc, req, leaf, e.inter)
			if n := r.signer.n.Load() - base; n != 0 {
				t.Errorf("before 2/3 of validity: %d signatures, want 0", n)
			}
			e.clock.Advance(2 * time.Second)
			resp, _ := mustOCSP(t, r.svc, req, leaf, e.inter)
			if n := r.signer.n.Load() - base; n != 1 || !resp.ThisUpdate.After(time.Now().Add(DefaultOCSPValidity/2)) {
				t.Errorf("after 2/3 of validity: %d signatures (want 1), thisUpdate %v", n, resp.ThisUpdate)
			}
		})
	}
}

// A revocation on replica A is answered by replica B at its next query, and
// responses signed on one replica are reused by the other.
func TestRevocationOCSPReplicas(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			e := newRevEnv(t, db, 0)
			ra, rb := e.replica(RevocationConfig{}), e.replica(RevocationConfig{})
			leaf := e.register(ra, "bot.acme")
			req := ocspRequest(t, leaf, e.inter, crypto.SHA1)
			if resp, _ := mustOCSP(t, rb.svc, req, leaf, e.inter); resp.Status != ocsp.Good {
				t.Fatalf("B: status %d, want good", resp.Status)
			}
			if resp, _ := mustOCSP(t, ra.svc, req, leaf, e.inter); resp.Status != ocsp.Good {
				t.Fatalf("A: status %d, want good", resp.Status)
			}
			if a, b := ra.signer.n.Load(), rb.signer.n.Load(); a != 0 || b != 1 {
				t.Errorf("signatures A=%d B=%d, want 0 and 1 (A reuses B's stored response)", a, b)
			}
			e.revoke(ra, "bot.acme", "affiliationChanged")
			resp, _ := mustOCSP(t, rb.svc, req, leaf, e.inter)
			if resp.Status != ocsp.Revoked || resp.RevocationReason != ocsp.AffiliationChanged {
				t.Errorf("B after A revoked: status %d reason %d, want revoked affiliationChanged", resp.Status, resp.RevocationReason)
			}
		})
	}
}

func TestOCSPCacheBound(t *testing.T) {
	c := newOCSPCache(3)
	for i := range 10 {
		c.put(&ocspEntry{key: ocspKey{serial: string(rune('a' + i)), alg: crypto.SHA1}})
	}
	if got := c.len(); got != 3 {
		t.Fatalf("cache holds %d entries, want 3", got)
	}
	if c.get(ocspKey{serial: "a", alg: crypto.SHA1}) != nil || c.get(ocspKey{serial: "j", alg: crypto.SHA1}) == nil {
		t.Errorf("cache did not evict the least recently used entries")
	}
}

// FuzzOCSPRequest feeds untrusted bytes to the OCSP request path: the GET
// decoding and the request checks. It must never panic, and may only accept
// a request for a positive, at most 20-octet serial of the fixture CA.
func FuzzOCSPRequest(f *testing.F) {
	pemBytes, err := os.ReadFile("testdata/ocsp-issuer.pem")
	if err != nil {
		f.Fatal(err)
	}
	certs, err := ca.ParseCertificatesPEM(pemBytes, 1)
	if err != nil {
		f.Fatal(err)
	}
	hashes, err := certIDHashes(certs[0])
	if err != nil {
		f.Fatal(err)
	}
	valid := ocspRequest(f, &x509.Certificate{SerialNumber: big.NewInt(0x5a01)}, certs[0], crypto.SHA256)
	if _, verdict := parseOCSPRequest(valid, hashes); verdict != ocspOK {
		f.Fatalf("a valid request for the fixture CA: verdict %d, want ok", verdict)
	}
	f.Add(valid)
	f.Add([]byte(base64.StdEncoding.EncodeToString(valid)))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, raw := range [][]byte{data, func() []byte { b, _ := decodeOCSPGet(string(data)); return b }()} {
			req, verdict := parseOCSPRequest(raw, hashes)
			if verdict != ocspOK {
				if req != nil {
					t.Fatalf("verdict %d with a request", verdict)
				}
				continue
			}
			if req.SerialNumber.Sign() <= 0 || len(req.SerialNumber.Bytes()) > 20 {
				t.Fatalf("accepted serial %v", req.SerialNumber)
			}
			if !bytes.Equal(req.IssuerKeyHash, hashes[req.HashAlgorithm].key) {
				t.Fatalf("accepted a foreign issuer key hash")
			}
		}
	})
}

// BenchmarkOCSPCached measures an OCSP query answered from the cache: parse,
// one indexed status read, cache hit. Compare with the parallel HSM signature
// rate (cmd/atr-bench reports the ratio).
func BenchmarkOCSPCached(b *testing.B) {
	for _, db := range testdb.Names() {
		b.Run(db, func(b *testing.B) {
			e := newRevEnv(b, db, 0)
			r := e.replica(RevocationConfig{})
			leaf := e.register(r, "bot.acme")
			req := ocspRequest(b, leaf, e.inter, crypto.SHA1)
			mustOCSP(b, r.svc, req, leaf, e.inter)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := r.svc.ocsp(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			if n := r.signer.n.Load(); n != 1 {
				b.Errorf("%d signatures during the benchmark, want 1", n)
			}
		})
	}
}
