package agent_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api"
	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

func TestMain(m *testing.M) { os.Exit(hsmtest.Main(m)) }

// liveRegistry is a real ATR: SoftHSM2 tokens, the registry on SQLite, the
// API over HTTPS (client certificates requested, for mTLS renewal), with
// leaves that live one minute. Unlike the fixture's, its clock is the real
// one: the Sources renew on real time.
type liveRegistry struct {
	url   string
	roots *x509.CertPool // for the registry's own TLS certificate
	owner *client.Client // an owner's API key, namespace "acme"
	f     *registrytest.Fixture
}

func newLiveRegistry(t *testing.T) *liveRegistry {
	t.Helper()
	f := registrytest.NewFixture(t, registrytest.WithProfile(ca.Profile{Lifetime: time.Minute, Backdate: time.Second, ServerAuth: true}))
	cfg := f.Config
	cfg.Now = time.Now
	reg, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := api.New(api.Config{TrustDomain: registrytest.TrustDomain, TLS: true},
		api.Deps{Lifecycle: reg, Auth: reg, Admin: reg, Now: time.Now}, f.Log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	owner, err := client.New(srv.URL, client.WithRootCAs(roots),
		client.WithAPIKey(f.NewAPIKey("acme", "acme", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)))
	if err != nil {
		t.Fatal(err)
	}
	return &liveRegistry{url: srv.URL, roots: roots, owner: owner, f: f}
}

// register registers agent name with a fresh in-memory key.
func (lr *liveRegistry) register(t *testing.T, name string) *agent.Identity {
	t.Helper()
	k, err := agent.GenerateKey(agent.KeyP256)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := agent.Register(context.Background(), lr.owner, k, client.RegisterRequest{Name: name})
	if err != nil {
		t.Fatalf("registering %s: %v", name, err)
	}
	return iss.Identity()
}

// renewCounter counts a Source's renewals.
type renewCounter struct {
	mu      sync.Mutex
	serials map[string]bool
	n       atomic.Int64
}

func (c *renewCounter) onRenew(leaf *x509.Certificate) {
	c.mu.Lock()
	c.serials[leaf.SerialNumber.String()] = true
	c.mu.Unlock()
	c.n.Add(1)
}

// TestSourceMTLSAcrossRenewals runs an mTLS server and an mTLS client built
// only from package agent against a real registry, both renewing by
// themselves (one persisting to files, one in memory), and makes requests
// continuously, over one kept-alive connection and over a new connection
// each time, until each side has renewed at least twice: no request may
// fail, the kept-alive connection must survive every renewal, and new
// connections must see the new certificates.
func TestSourceMTLSAcrossRenewals(t *testing.T) {
	if testing.Short() {
		t.Skip("renews on real time (about 30 s)")
	}
	lr := newLiveRegistry(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The server agent keeps files, as `atr agent register` leaves them.
	dir := t.TempDir()
	keyFile, certFile := filepath.Join(dir, "server.key"), filepath.Join(dir, "server.pem")
	sid := lr.register(t, "server.acme")
	keyPEM, err := agent.MarshalKey(sid.Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{keyFile, keyPEM, agent.KeyFileMode},
		{certFile, ca.EncodeCertificatesPEM(sid.Leaf), agent.CertFileMode},
		{agent.ChainPath(certFile, ""), ca.EncodeCertificatesPEM(sid.Chain...), agent.CertFileMode},
	} {
		if err := agent.WriteFile(w.path, w.data, w.mode, false); err != nil {
			t.Fatal(err)
		}
	}
	// Renew at about 11 s of each 61 s lifetime: two renewals in ~25 s.
	const renewBefore = 50 * time.Second
	serverRenewals := &renewCounter{serials: map[string]bool{}}
	serverSrc, err := agent.NewSource(ctx, agent.Config{Server: lr.url, ServerRoots: lr.roots, KeyFile: keyFile, CertFile: certFile,
		RenewBefore: renewBefore, MaxBackoff: time.Second, OnRenew: serverRenewals.onRenew})
	if err != nil {
		t.Fatal(err)
	}
	defer serverSrc.Close()
	clientRenewals := &renewCounter{serials: map[string]bool{}}
	clientSrc, err := agent.NewSource(ctx, agent.Config{Server: lr.url, ServerRoots: lr.roots, Identity: lr.register(t, "client.acme"),
		KeyType: agent.KeyEd25519, RenewBefore: renewBefore, MaxBackoff: time.Second, OnRenew: clientRenewals.onRenew})
	if err != nil {
		t.Fatal(err)
	}
	defer clientSrc.Close()
	if got := clientSrc.Name(); got != "client.acme" {
		t.Fatalf("Name() = %q", got)
	}

	// The application server: answers with the client's agent name and
	// certificate serial.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{TLSConfig: serverSrc.ServerTLSConfig(agent.AuthorizeNames("client.acme")),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			leaf := r.TLS.PeerCertificates[0]
			name, _ := ca.AgentName(leaf, registrytest.TrustDomain)
			fmt.Fprintf(w, "%s %s", name, leaf.SerialNumber)
		}),
	}
	go app.ServeTLS(ln, "", "")
	defer app.Close()
	appURL := "https://" + ln.Addr().String() + "/"

	// Two clients: one keeps its connection alive, the other makes a new
	// connection (a full handshake) for every request.
	var keptConns, freshConns atomic.Int64
	dialer := func(n *atomic.Int64) func(ctx context.Context, network, addr string) (net.Conn, error) {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			n.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
	}
	kept := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: clientSrc.ClientTLSConfig(agent.AuthorizeNames("server.acme")), DialContext: dialer(&keptConns), MaxConnsPerHost: 1}}
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: clientSrc.ClientTLSConfig(agent.AuthorizeNames("server.acme")), DialContext: dialer(&freshConns), DisableKeepAlives: true}}

	var (
		mu            sync.Mutex
		requests      int
		failures      []string
		serverSerials = map[string]bool{} // seen by fresh connections
		clientSerials = map[string]bool{} // seen by the server on fresh connections
	)
	get := func(c *http.Client, what string) {
		resp, err := c.Get(appURL)
		mu.Lock()
		defer mu.Unlock()
		requests++
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", what, err))
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		name, serial, _ := strings.Cut(string(body), " ")
		if err != nil || resp.StatusCode != 200 || name != "client.acme" {
			failures = append(failures, fmt.Sprintf("%s: %d %q %v", what, resp.StatusCode, body, err))
			return
		}
		if what == "fresh" {
			clientSerials[serial] = true
			serverSerials[resp.TLS.PeerCertificates[0].SerialNumber.String()] = true
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for serverRenewals.n.Load() < 2 || clientRenewals.n.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after 2 minutes: %d server and %d client renewals, want 2 each (server err %v, client err %v)",
				serverRenewals.n.Load(), clientRenewals.n.Load(), serverSrc.Err(), clientSrc.Err())
		}
		get(kept, "kept")
		get(fresh, "fresh")
		time.Sleep(20 * time.Millisecond)
	}
	// One more round after the last renewal: the new certificates are used.
	get(kept, "kept")
	get(fresh, "fresh")

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d requests; %d server and %d client renewals; %d kept-alive and %d fresh connections",
		requests, serverRenewals.n.Load(), clientRenewals.n.Load(), keptConns.Load(), freshConns.Load())
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed; first: %s", len(failures), requests, failures[0])
	}
	if n := keptConns.Load(); n != 1 {
		t.Errorf("the kept-alive client dialed %d connections, want 1: a renewal dropped the connection", n)
	}
	if len(serverSerials) < 3 || len(clientSerials) < 3 {
		t.Errorf("new connections saw %d server and %d client certificates, want at least 3 each (two renewals)", len(serverSerials), len(clientSerials))
	}
	for serial := range serverRenewals.serials {
		if !serverSerials[serial] {
			t.Errorf("no new connection saw the server's renewed certificate %s", serial)
		}
	}

	// The server's renewals are in its files, which match.
	k, err := agent.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := agent.LoadCertificate(certFile, agent.ChainPath(certFile, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !agent.KeyMatches(k, leaf) || !leaf.Equal(serverSrc.Certificate()) {
		t.Error("the server's files do not hold its current identity")
	}
	if got := agent.KeyType(clientSrc.Identity().Key); got != agent.KeyEd25519 {
		t.Errorf("the client's renewed key is %s, want ed25519 (Config.KeyType)", got)
	}

	// Close stops the renewals; the last identity stays served.
	if err := clientSrc.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-clientSrc.Done():
	default:
		t.Error("Done is not closed after Close")
	}
}

// TestSourceRefusals: peers that are not ATR agents of the trust domain, or
// not the authorized one, cannot connect; a revoked agent's Source stops
// with an error that says so.
func TestSourceRefusals(t *testing.T) {
	lr := newLiveRegistry(t)
	ctx := context.Background()
	newSource := func(name string) *agent.Source {
		src, err := agent.NewSource(ctx, agent.Config{Server: lr.url, ServerRoots: lr.roots, Identity: lr.register(t, name)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	}
	server, good, other := newSource("server.acme"), newSource("good.acme"), newSource("other.acme")
	if b := server.Bundle(); len(b) != 2 {
		t.Errorf("the bundle fetched from the registry has %d certificates, want root and intermediate", len(b))
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server.ServerTLSConfig(agent.AuthorizeNames("good.acme")))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err == nil {
					c.Write([]byte("ok"))
				}
			}()
		}
	}()
	selfSigned := forgedAgent(t, "good.acme")
	for _, tt := range []struct {
		name    string
		cfg     *tls.Config
		wantErr bool
	}{
		{"authorized agent", good.ClientTLSConfig(agent.AuthorizeNames("server.acme")), false},
		{"another agent of the trust domain", other.ClientTLSConfig(agent.AuthorizeNames("server.acme")), true},
		{"server not the one expected", good.ClientTLSConfig(agent.AuthorizeNames("elsewhere.acme")), true},
		{"no client certificate", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, true},
		{"a certificate from another CA", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{selfSigned}}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", ln.Addr().String(), tt.cfg)
			if err == nil {
				defer c.Close()
				// In TLS 1.3 the server's verdict on the client comes with
				// the first read.
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				var buf [2]byte
				_, err = io.ReadFull(c, buf[:])
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("err %v, want error %v", err, tt.wantErr)
			}
		})
	}

	t.Run("cancelling the context stops the renewals", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		src, err := agent.NewSource(cctx, agent.Config{Server: lr.url, ServerRoots: lr.roots, Identity: lr.register(t, "brief.acme")})
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case <-src.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the renewals still run after the context was cancelled")
		}
		if err := src.Err(); err != nil {
			t.Errorf("Err after a cancellation: %v, want nil", err)
		}
		if c, _ := src.GetCertificate(nil); c == nil || c.Leaf == nil {
			t.Error("the last identity is no longer served")
		}
	})
	t.Run("bad configurations are refused", func(t *testing.T) {
		id := lr.register(t, "conf.acme")
		for _, cfg := range []agent.Config{
			{Identity: id},
			{Server: lr.url, ServerRoots: lr.roots},
			{Server: lr.url, ServerRoots: lr.roots, Identity: id, KeyFile: "k", CertFile: "c"},
			{Server: lr.url, ServerRoots: lr.roots, Identity: &agent.Identity{Key: server.Identity().Key, Leaf: id.Leaf}},
			{Server: lr.url, ServerRoots: lr.roots, Identity: &agent.Identity{Leaf: id.Leaf}},
			{Server: lr.url, ServerRoots: lr.roots, Identity: id, Bundle: []*x509.Certificate{foreignRoot(t)}},
		} {
			if src, err := agent.NewSource(ctx, cfg); err == nil {
				src.Close()
				t.Errorf("NewSource(%+v) succeeded", cfg)
			}
		}
	})
	t.Run("a revoked agent stops renewing, saying why", func(t *testing.T) {
		if _, err := lr.owner.Revoke(ctx, "other.acme", "keyCompromise"); err != nil {
			t.Fatal(err)
		}
		_, err := other.Renew(ctx)
		var se *agent.ServerError
		if !errors.As(err, &se) || se.CertStatus != "revoked" || !strings.Contains(err.Error(), "is revoked") {
			t.Fatalf("Renew of a revoked agent: %v, want a ServerError saying it is revoked", err)
		}
		if agent.Retryable(err) {
			t.Error("a revoked agent's renewal is retryable")
		}
	})
}

// TestExampleIsShort keeps Example, a whole mTLS agent, under 40 lines.
func TestExampleIsShort(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "example_test.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Name.Name == "Example" {
			lines := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
			if lines >= 40 {
				t.Errorf("Example is %d lines, want fewer than 40", lines)
			}
			return
		}
	}
	t.Error("no func Example in example_test.go")
}

// forgedAgent is a self-signed certificate with the SPIFFE ID of agent name:
// the same names as a genuine one, no ATR signature.
func forgedAgent(t *testing.T, name string) tls.Certificate {
	t.Helper()
	k, err := agent.GenerateKey(agent.KeyP256)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(ca.AgentURI(registrytest.TrustDomain, name))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{u}, NotBefore: time.Now().Add(-time.Minute),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// foreignRoot is a root CA certificate that issued nothing of the registry's.
func foreignRoot(t *testing.T) *x509.Certificate {
	t.Helper()
	k, err := agent.GenerateKey(agent.KeyP256)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := ca.RootTemplate("Foreign Root", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	root, err := ca.CreateCertificate(tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return root
}
