package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry"
)

// fakeRegistry is an in-memory stand-in for *registry.Registry used by the tests of
// the HTTP layer's own behaviour (middleware, limits, error mapping). The lifecycle
// itself is tested against the real registry in registry_test.go.
type fakeRegistry struct {
	mu      sync.Mutex
	keys    map[string]registry.Actor // presented key → actor
	agents  map[string]*registry.Agent
	bundle  []byte
	fail    error // when set, every lifecycle call returns it
	authN   int   // Authenticate calls
	ready   error
	agentOK map[string]bool // AuthenticateAgent: CN → accepted
}

const (
	// Well-formed (atr_<16 hex>_<64 hex>): the client refuses to send anything else.
	keyAlice = "atr_a11ce00000000000_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	keyBob   = "atr_b0b0000000000000_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	keyRead  = "atr_5ead000000000000_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	keyAdmin = "atr_ad00000000000000_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func newFake(t testing.TB) *fakeRegistry {
	t.Helper()
	return &fakeRegistry{
		keys: map[string]registry.Actor{
			keyAlice: {KeyID: "alice", Owner: "alice", Namespace: "alice", Scopes: []string{ScopeAgentsWrite}},
			keyBob:   {KeyID: "bob", Owner: "bob", Namespace: "bob", Scopes: []string{ScopeAgentsWrite}},
			keyRead:  {KeyID: "reader", Owner: "alice", Namespace: "alice", Scopes: []string{ScopeAgentsRead}},
			keyAdmin: {KeyID: "admin", Owner: "ops", Scopes: []string{ScopeAdmin}},
		},
		agents:  map[string]*registry.Agent{},
		bundle:  testCA(t),
		agentOK: map[string]bool{},
	}
}

func testCA(t testing.TB) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func (f *fakeRegistry) check(name string) error {
	if name == "panic.alice" {
		panic("boom: /srv/atr/secret/path.go:42")
	}
	return f.fail
}

func (f *fakeRegistry) own(a registry.Actor, name string) (*registry.Agent, error) {
	ag, ok := f.agents[name]
	if !ok || (ag.Owner != a.Owner && !a.IsAdmin() && !slices.Contains(a.Scopes, ScopeAdmin)) {
		return nil, fmt.Errorf("fake: agent %q: %w", name, registry.ErrNotFound)
	}
	return ag, nil
}

func (f *fakeRegistry) Register(_ context.Context, a registry.Actor, req registry.RegisterRequest) (*registry.Issued, error) {
	if err := f.check(req.Name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !strings.HasSuffix(req.Name, "."+a.Namespace) {
		return nil, registry.ErrForbidden
	}
	if _, ok := f.agents[req.Name]; ok {
		return nil, registry.ErrConflict
	}
	if !strings.Contains(string(req.CSR), "CERTIFICATE REQUEST") {
		return nil, fmt.Errorf("fake: csr: %w", registry.ErrInvalid)
	}
	now := time.Now()
	ag := &registry.Agent{Name: req.Name, Owner: a.Owner, Status: "active", Capabilities: req.Capabilities,
		Metadata: req.Metadata, CurrentSerial: "01", CreatedAt: now, UpdatedAt: now}
	f.agents[req.Name] = ag
	return &registry.Issued{Agent: *ag, Certificate: registry.CertificateRecord{Serial: "01", NotBefore: now, NotAfter: now.Add(time.Hour)},
		CertificatePEM: "-----BEGIN CERTIFICATE-----\n", LogIndex: int64(len(f.agents) - 1)}, nil
}

func (f *fakeRegistry) Rotate(_ context.Context, a registry.Actor, name string, _ []byte) (*registry.Issued, error) {
	if err := f.check(name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if a.AgentName != "" {
		if a.AgentName != name {
			return nil, registry.ErrForbidden
		}
		a = registry.Actor{Owner: f.agents[name].Owner}
	}
	ag, err := f.own(a, name)
	if err != nil {
		return nil, err
	}
	return &registry.Issued{Agent: *ag}, nil
}

func (f *fakeRegistry) Revoke(_ context.Context, a registry.Actor, name, _ string) (*registry.Agent, error) {
	if err := f.check(name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ag, err := f.own(a, name)
	if err != nil {
		return nil, err
	}
	ag.Status = "revoked"
	return ag, nil
}

func (f *fakeRegistry) ListAgents(_ context.Context, a registry.Actor, _ string, limit int) ([]registry.Agent, string, error) {
	if f.fail != nil {
		return nil, "", f.fail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []registry.Agent
	for _, ag := range f.agents {
		if ag.Owner == a.Owner || slices.Contains(a.Scopes, ScopeAdmin) {
			out = append(out, *ag)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) > limit {
		return out[:limit], out[limit-1].Name, nil
	}
	return out, "", nil
}

func (f *fakeRegistry) GetAgent(_ context.Context, a registry.Actor, name string) (*registry.AgentDetail, error) {
	if err := f.check(name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ag, err := f.own(a, name)
	if err != nil {
		return nil, err
	}
	return &registry.AgentDetail{Agent: *ag}, nil
}

func (f *fakeRegistry) CurrentCertificate(_ context.Context, a registry.Actor, name string) (string, error) {
	if err := f.check(name); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.own(a, name); err != nil {
		return "", err
	}
	return "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n", nil
}

func (f *fakeRegistry) Verify(_ context.Context, leaf, _ []byte) (*registry.VerifyResult, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	blk, _ := pem.Decode(leaf)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("fake: not a certificate: %w", registry.ErrInvalid)
	}
	if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
		return nil, fmt.Errorf("fake: %v: %w", err, registry.ErrInvalid)
	}
	return &registry.VerifyResult{Verified: false, Reason: "unknown_certificate"}, nil
}

func (f *fakeRegistry) Bundle() []byte { return f.bundle }

func (f *fakeRegistry) Ready(context.Context) error { return f.ready }

func (f *fakeRegistry) Authenticate(_ context.Context, key string) (*registry.Actor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authN++
	a, ok := f.keys[key]
	if !ok {
		return nil, fmt.Errorf("fake: %w", registry.ErrUnauthenticated)
	}
	return &a, nil
}

func (f *fakeRegistry) AuthenticateAgent(_ context.Context, chain []*x509.Certificate) (*registry.Actor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(chain) == 0 || !f.agentOK[chain[0].Subject.CommonName] {
		return nil, registry.ErrUnauthenticated
	}
	return &registry.Actor{AgentName: chain[0].Subject.CommonName}, nil
}

func (f *fakeRegistry) CreateAPIKey(_ context.Context, a registry.Actor, owner, ns string, scopes []string, _ time.Duration) (*registry.APIKey, string, error) {
	if f.fail != nil {
		return nil, "", f.fail
	}
	return &registry.APIKey{ID: "k1", Owner: owner, Namespace: ns, Scopes: scopes, CreatedAt: time.Now()}, "atr_k1_secret", nil
}

func (f *fakeRegistry) RevokeAPIKey(_ context.Context, _ registry.Actor, id string) error {
	if id != "k1" {
		return registry.ErrNotFound
	}
	return nil
}

func (f *fakeRegistry) ListAudit(context.Context, registry.Actor, string, int) ([]registry.AuditEvent, string, error) {
	return []registry.AuditEvent{{ID: 1, Time: time.Now(), Actor: "key:alice", Action: "register", Result: "success"}}, "", nil
}

// fakeLog implements TransparencyLog and Revocation.
type fakeLog struct{}

func (fakeLog) Checkpoint(context.Context) ([]byte, error) { return []byte("atr\n1\nAAAA\n"), nil }
func (fakeLog) LogKeyPEM() []byte                          { return []byte("-----BEGIN PUBLIC KEY-----\n") }
func (fakeLog) LogVerifierKey() string                     { return "example.org/log+01020304+AgAA" }
func (fakeLog) VRFPublicKeyPEM() []byte                    { return []byte("-----BEGIN PUBLIC KEY-----\nvrf\n") }
func (fakeLog) LogEntries(_ context.Context, s, e int64) ([][]byte, error) {
	if e > 2 {
		return nil, registry.ErrNotFound
	}
	return [][]byte{[]byte("a"), []byte("b")}[s:e], nil
}
func (fakeLog) InclusionProof(context.Context, int64, int64) ([]tlog.Hash, error) {
	return []tlog.Hash{{1}}, nil
}
func (fakeLog) ConsistencyProof(context.Context, int64, int64) ([]tlog.Hash, error) {
	return []tlog.Hash{{2}}, nil
}
func (fakeLog) Tile(_ context.Context, path string) ([]byte, error) {
	if path != "tile/0/000.p/1" {
		return nil, registry.ErrNotFound
	}
	return make([]byte, 32), nil
}
func (fakeLog) CRL(context.Context) ([]byte, time.Time, error) {
	return []byte{0x30, 0x00}, time.Now().Add(time.Hour), nil
}
func (fakeLog) CRLKeyIDs() (issuers, roots []string) { return []string{"0a0b"}, nil }
func (fakeLog) CRLOf(_ context.Context, keyID string) ([]byte, time.Time, error) {
	if keyID != "0a0b" {
		return nil, time.Time{}, fmt.Errorf("fake: crl %s: %w", keyID, registry.ErrNotFound)
	}
	return []byte{0x30, 0x00}, time.Now().Add(time.Hour), nil
}
func (fakeLog) OCSP(_ context.Context, req []byte) ([]byte, error) {
	if len(req) == 0 {
		return nil, errors.New("fake: empty")
	}
	return []byte{0x30, 0x03, 0x0a, 0x01, 0x00}, nil
}

// limitRecorder remembers the page size the registry was asked for.
type limitRecorder struct {
	*fakeRegistry
	limit int
}

func (l *limitRecorder) ListAgents(ctx context.Context, a registry.Actor, c string, limit int) ([]registry.Agent, string, error) {
	l.limit = limit
	return l.fakeRegistry.ListAgents(ctx, a, c, limit)
}

func registryAgent(name, owner string) *registry.Agent {
	return &registry.Agent{Name: name, Owner: owner, Status: "active"}
}

// selfSigned returns a throwaway client certificate with the given common name.
func selfSigned(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}
