package hsm_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/miekg/pkcs11"
	"github.com/sirupsen/logrus"
)

// rawToken is a second, independent miekg/pkcs11 handle on the module the
// Token uses — the "someone else" that pulls sessions out from under
// crypto11. It never finalizes unless asked to.
type rawToken struct {
	p    *pkcs11.Ctx
	slot uint
}

func openRaw(t *testing.T, cfg hsm.Config) *rawToken {
	t.Helper()
	p := pkcs11.New(cfg.Module)
	if p == nil {
		t.Fatalf("pkcs11.New(%s) failed", cfg.Module)
	}
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatalf("Initialize: %v", err)
	}
	t.Cleanup(p.Destroy)
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatalf("GetSlotList: %v", err)
	}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			t.Fatalf("GetTokenInfo: %v", err)
		}
		if ti.Label == cfg.TokenLabel {
			return &rawToken{p: p, slot: s}
		}
	}
	t.Fatalf("token %q not found", cfg.TokenLabel)
	return nil
}

// session opens a session; it shares the process's login state, so while
// the Token is logged in it sees private objects.
func (r *rawToken) session(t *testing.T) pkcs11.SessionHandle {
	t.Helper()
	sh, err := r.p.OpenSession(r.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatalf("OpenSession: %v", err)
	}
	t.Cleanup(func() { _ = r.p.CloseSession(sh) })
	return sh
}

// boolAttrs reads boolean attributes of the single object matching class
// and label.
func (r *rawToken) boolAttrs(t *testing.T, class uint, label string, types []uint) map[uint]bool {
	t.Helper()
	sh := r.session(t)
	if err := r.p.FindObjectsInit(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}); err != nil {
		t.Fatalf("FindObjectsInit: %v", err)
	}
	hs, _, err := r.p.FindObjects(sh, 10)
	_ = r.p.FindObjectsFinal(sh)
	if err != nil || len(hs) != 1 {
		t.Fatalf("FindObjects(class %d, %q) = %d objects, %v; want 1", class, label, len(hs), err)
	}
	var tmpl []*pkcs11.Attribute
	for _, typ := range types {
		tmpl = append(tmpl, pkcs11.NewAttribute(typ, nil))
	}
	attrs, err := r.p.GetAttributeValue(sh, hs[0], tmpl)
	if err != nil {
		t.Fatalf("GetAttributeValue: %v", err)
	}
	out := map[uint]bool{}
	for _, a := range attrs {
		out[a.Type] = len(a.Value) == 1 && a.Value[0] != 0
	}
	return out
}

// killSessions closes every session of the application on the token,
// including crypto11's logged-in one: the token forgets the login.
func (r *rawToken) killSessions(t *testing.T) {
	t.Helper()
	if err := r.p.CloseAllSessions(r.slot); err != nil {
		t.Fatalf("CloseAllSessions: %v", err)
	}
}

// waitHealthy polls Healthy until it returns nil. The bound is a liveness
// guard against a hang, not a speed goal.
func waitHealthy(t *testing.T, tok *hsm.Token) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = tok.Healthy(t.Context()); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("token did not recover: last Healthy error: %v", err)
}

func signOnce(t *testing.T, s crypto.Signer) ([]byte, error) {
	t.Helper()
	d := sha256.Sum256([]byte("hello"))
	return s.Sign(rand.Reader, d[:], crypto.SHA256)
}

// selfSigned makes a certificate for s's key, signed by s itself.
func selfSigned(t *testing.T, s crypto.Signer, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("ParseCertificate: %v", err)
	}
	return c
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func bufferLogger(buf *syncBuffer) *logrus.Entry {
	l := logrus.New()
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetOutput(buf)
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l)
}
